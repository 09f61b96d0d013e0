"""Structural checks of the deployment files: Dockerfile, compose stack, Kubernetes manifests.

No Docker engine or Kubernetes cluster is needed: the files are parsed and held against the
code they deploy. Each ``check_*`` function returns a list of problems (empty: fine), so a
test can both assert that the real files pass and that a broken copy is caught.

What the code says, the checks take from the code, never from a list kept here:
- settings: the fields of :class:`pipeline.settings.Settings` (``SIYU_`` + upper-cased name);
- commands: the sub-commands of the ``siyu`` click group;
- probe paths: the web views the worker app registers and the collector's aiohttp routes,
  found by building both (see :class:`Routes`).
"""

from __future__ import annotations

import json
import re
import shlex
import tempfile
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
K8S = ROOT / "deploy" / "k8s"

#: The image built from this repository's Dockerfile, by repository name (without tag).
SIYU_IMAGE = "siyu"
#: Which setting holds the web port of each siyu command that serves probes.
PORT_SETTING = {"worker": "worker_web_port", "collector": "collector_port"}
HOST_SETTING = {"worker": "worker_web_host", "collector": "collector_host"}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


# --- settings -----------------------------------------------------------------------------


def setting_variables() -> dict[str, str]:
    """``SIYU_*`` variable -> field name, for every field of :class:`Settings`."""
    return {f"SIYU_{name.upper()}": name for name in Settings.model_fields}


def unknown_siyu_variables(names: Iterator[str] | list[str], where: str) -> list[str]:
    """A problem for each ``SIYU_*`` name that is not a setting."""
    known = setting_variables()
    return [
        f"{where}: {name} is not a setting of pipeline.settings.Settings"
        for name in names
        if name.startswith("SIYU_") and name not in known
    ]


def invalid_setting_values(env: Mapping[str, str], where: str) -> list[str]:
    """Problems with the values of the ``SIYU_*`` variables in ``env`` (validated as settings).

    Built with ``model_validate``, so neither the environment of the test run nor a ``.env``
    file takes part: only these values and the defaults.
    """
    known = setting_variables()
    values = {known[k]: v for k, v in env.items() if k in known}
    try:
        Settings.model_validate(values)
    except ValidationError as err:
        return [
            f"{where}: SIYU_{str(e['loc'][0]).upper()}={values.get(str(e['loc'][0]))!r}: {e['msg']}"
            for e in err.errors(include_url=False)
        ]
    return []


def effective_setting(env: Mapping[str, str], name: str) -> str:
    """The value a process started with ``env`` gets for setting ``name`` (default if unset)."""
    var = f"SIYU_{name.upper()}"
    if var in env:
        return env[var]
    return str(Settings.model_fields[name].get_default(call_default_factory=True))


# --- images -------------------------------------------------------------------------------

_TAG_VERSION = re.compile(r"^v?\d+(\.\d+)*([.-][0-9A-Za-z.-]+)?$")


def image_problem(ref: str, where: str) -> str | None:
    """Why ``ref`` is not pinned to a version, or None.

    Pinned: a digest (``@sha256:...``), or a tag that starts with a version number, such as
    ``3.9.1``, ``v3.5.0`` or ``3.11.14-slim-trixie``. Not pinned: no tag, ``latest``, or a
    tag with no version in it (``stable``, ``slim``).
    """
    if "@sha256:" in ref:
        return None
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:  # no tag at all ("registry:5000/img" has a port, not a tag)
        return f"{where}: image {ref!r} has no tag; pin it to a version"
    if tag == "latest" or not _TAG_VERSION.match(tag):
        return f"{where}: image {ref!r} is not pinned to a version (tag {tag!r})"
    return None


def project_version() -> str:
    """siyu's version, from pyproject.toml."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def siyu_image_problem(ref: str, where: str) -> str | None:
    """The image of siyu itself must carry the version of the code it is built from."""
    name, _, tag = ref.partition(":")
    if name.rsplit("/", 1)[-1] == SIYU_IMAGE and tag != project_version():
        return f"{where}: siyu image {ref!r} should be tagged {project_version()!r} (pyproject)"
    return None


# --- Dockerfile -----------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    stage: int


@dataclass
class Dockerfile:
    instructions: list[Instruction]
    args: dict[str, str]  # ARG defaults declared before the first FROM

    def stages(self) -> int:
        return sum(1 for i in self.instructions if i.keyword == "FROM")

    def final(self, keyword: str) -> list[Instruction]:
        last = self.stages() - 1
        return [i for i in self.instructions if i.stage == last and i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """ENV of the final stage: the defaults every container of the image starts with."""
        out: dict[str, str] = {}
        for ins in self.final("ENV"):
            for item in shlex.split(ins.args):
                key, _, value = item.partition("=")
                out[key] = value
        return out

    def base_images(self) -> list[str]:
        refs = []
        for ins in self.instructions:
            if ins.keyword == "FROM":
                ref = ins.args.split()[0]
                refs.append(re.sub(r"\$\{?(\w+)\}?", lambda m: self.args.get(m[1], m[0]), ref))
        return refs


def parse_dockerfile(text: str) -> Dockerfile:
    """Instructions with line continuations joined and comments dropped."""
    logical: list[str] = []
    buf = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        logical.append(buf + stripped)
        buf = ""
    if buf:
        logical.append(buf)
    instructions: list[Instruction] = []
    args: dict[str, str] = {}
    stage = -1
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        if keyword == "ARG" and stage == -1:
            name, _, default = rest.strip().partition("=")
            args[name] = default
        instructions.append(Instruction(keyword, rest.strip(), stage))
    return Dockerfile(instructions, args)


def _exec_form(args: str) -> list[str]:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return shlex.split(args)
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


_COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|cc1|make|cmake|rustc|cargo)\b")


def check_dockerfile(df: Dockerfile, dockerignore: str, context: Path) -> list[str]:
    """Multi-stage, pinned bases, non-root, no compilers at run time, state volume, commands."""
    problems: list[str] = []
    if df.stages() < 2:
        problems.append("Dockerfile: not multi-stage (build and runtime in one stage)")
    for ref in df.base_images():
        problems += filter(None, [image_problem(ref, "Dockerfile FROM")])
    users = df.final("USER")
    if not users:
        problems.append("Dockerfile: the final stage sets no USER, so it runs as root")
    elif users[-1].args.split(":")[0] in ("root", "0"):
        problems.append(f"Dockerfile: the final stage runs as {users[-1].args!r}")
    for ins in df.final("RUN"):
        if _COMPILERS.search(ins.args):
            problems.append(f"Dockerfile: the final stage installs build tools: {ins.args[:80]}")
    env = df.env()
    problems += unknown_siyu_variables(list(env), "Dockerfile ENV")
    problems += invalid_setting_values(env, "Dockerfile ENV")
    data_dir = effective_setting(env, "data_dir")
    volumes = [v for ins in df.final("VOLUME") for v in _exec_form(ins.args)]
    if data_dir not in volumes:
        problems.append(f"Dockerfile: SIYU_DATA_DIR {data_dir!r} is not a VOLUME ({volumes})")
    entry = [v for ins in df.final("ENTRYPOINT") for v in _exec_form(ins.args)]
    if entry != ["siyu"]:
        problems.append(f"Dockerfile: ENTRYPOINT is {entry}, expected ['siyu']")
    cmd = [v for ins in df.final("CMD") for v in _exec_form(ins.args)]
    problems += unknown_commands(cmd[:1], "Dockerfile CMD")
    ignore = parse_dockerignore(dockerignore)
    for ins in df.instructions:
        if ins.keyword not in ("COPY", "ADD"):
            continue
        parts = [p for p in shlex.split(ins.args) if not p.startswith("--")]
        if any(p.startswith("--from") for p in shlex.split(ins.args)):
            continue
        for src in parts[:-1]:
            if not (context / src).exists():
                problems.append(f"Dockerfile: COPY source {src!r} does not exist")
            elif not included(ignore, src):
                problems.append(f"Dockerfile: COPY source {src!r} is excluded by .dockerignore")
    return problems


# --- .dockerignore ------------------------------------------------------------------------


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(f"^{out}$")


def parse_dockerignore(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(excludes?, pattern) in file order."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        rules.append((not negate, _glob_regex(pattern.strip("/"))))
    return rules


def included(rules: list[tuple[bool, re.Pattern[str]]], path: str) -> bool:
    """Whether ``path`` is in the build context: the last rule matching it or a parent wins."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for excludes, regex in rules:
        if any(regex.match(p) for p in prefixes):
            excluded = excludes
    return not excluded


# --- siyu commands and web routes ---------------------------------------------------------


def siyu_commands() -> set[str]:
    from pipeline.cli import main

    return set(main.commands)


def unknown_commands(args: list[str], where: str) -> list[str]:
    known = siyu_commands()
    return [f"{where}: `siyu {a}` is not a siyu command" for a in args if a not in known]


@dataclass
class Routes:
    """GET paths each siyu command serves, found by building its web application."""

    by_command: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def discover(cls) -> Routes:
        return cls({"worker": _worker_routes(), "collector": _collector_routes()})


def _worker_routes() -> set[str]:
    from pipeline.worker.app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings.model_validate({"data_dir": tmp}))
        return set(app.web.views)


def _collector_routes() -> set[str]:
    from pipeline.collector.keys import KeyRing
    from pipeline.collector.server import Collector

    app = Collector(Settings.model_validate({}), KeyRing({})).app()
    return {
        route.resource.canonical
        for route in app.router.routes()
        if route.method in ("GET", "HEAD") and route.resource is not None
    }


def probe_problems(
    routes: Routes, command: str, path: str, port: int, env: Mapping[str, str], where: str
) -> list[str]:
    """A probe of ``siyu <command>`` must hit a path it serves, on the port it listens on."""
    served = routes.by_command.get(command)
    if served is None:
        return [f"{where}: probes `siyu {command}`, which serves no web routes"]
    problems = []
    if path not in served:
        problems.append(f"{where}: probe path {path} is not served by `siyu {command}`")
    want = effective_setting(env, PORT_SETTING[command])
    if str(port) != want:
        problems.append(
            f"{where}: probe port {port} but `siyu {command}` listens on {want} "
            f"(SIYU_{PORT_SETTING[command].upper()})"
        )
    return problems


def exposed_host_problems(command: str, env: Mapping[str, str], where: str) -> list[str]:
    """Probes from the kubelet and scrapes from Prometheus come from outside the container."""
    setting = HOST_SETTING.get(command)
    if setting is None:
        return []
    host = effective_setting(env, setting)
    if host in _LOOPBACK:
        return [f"{where}: SIYU_{setting.upper()}={host} is unreachable from outside the pod"]
    return []


# --- compose --------------------------------------------------------------------------------

_INTERPOLATION = re.compile(
    r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|\$(?P<bare>\w+)"
)


def interpolated_names(text: str) -> set[str]:
    """Variables a compose file takes from the environment (``$$`` is a literal ``$``)."""
    return {m["name"] or m["bare"] for m in _INTERPOLATION.finditer(text.replace("$$", ""))}


def interpolate_defaults(value: str) -> str | None:
    """``value`` as compose makes it with none of its variables set; None where one is
    required (``${X:?...}``) or has no default."""
    missing = False

    def sub(m: re.Match[str]) -> str:
        nonlocal missing
        op = m["op"] or ""
        if op.endswith("-"):
            return str(m["arg"])
        if op.endswith("+"):
            return ""
        missing = True
        return ""

    out = _INTERPOLATION.sub(sub, value.replace("$$", "\0")).replace("\0", "$")
    return None if missing else out


def _service_env(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _command(value: Any) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


_URL = re.compile(r"https?://[^/\s'\"]+:(\d+)(/[^\s'\"]*)")


def check_compose(
    compose: Mapping[str, Any], text: str, base: Path, df: Dockerfile, routes: Routes
) -> list[str]:
    """The compose stack against the code and the repository (``base``: its directory)."""
    problems: list[str] = []
    problems += unknown_siyu_variables(sorted(interpolated_names(text)), "compose interpolation")
    services: Mapping[str, Any] = compose.get("services") or {}
    declared_volumes = set((compose.get("volumes") or {}).keys())
    image_defaults = df.env()
    worker_hosts: dict[str, str] = {}
    worker_volumes: dict[str, str] = {}
    for name, svc in services.items():
        where = f"compose service {name}"
        image = svc.get("image")
        if image is None:
            problems.append(f"{where}: no image (a built image needs a versioned tag too)")
        else:
            problems += filter(
                None, [image_problem(image, where), siyu_image_problem(image, where)]
            )
        build = svc.get("build")
        if build is not None:
            ctx = base / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
            if not (ctx / (dockerfile or "Dockerfile")).is_file():
                problems.append(f"{where}: build file {ctx / (dockerfile or 'Dockerfile')} missing")
        env = _service_env(svc)
        problems += unknown_siyu_variables(list(env), where)
        is_siyu = image is not None and image.partition(":")[0].rsplit("/", 1)[-1] == SIYU_IMAGE
        command = _command(svc.get("command"))
        if is_siyu:
            command = command or [v for i in df.final("CMD") for v in _exec_form(i.args)]
            problems += unknown_commands(command[:1], where)
            resolved = {k: interpolate_defaults(v) for k, v in env.items()}
            effective = {**image_defaults, **{k: v for k, v in resolved.items() if v is not None}}
            problems += invalid_setting_values(effective, where)
        else:
            effective = env
        mounts: dict[str, str] = {}
        for vol in svc.get("volumes") or []:
            source, target = _volume(vol)
            mounts[target] = source
            if source.startswith((".", "/")):
                if not (base / source).exists():
                    problems.append(f"{where}: mounted path {source} does not exist in the repo")
            elif source not in declared_volumes:
                problems.append(f"{where}: volume {source!r} is not declared under volumes:")
        health = svc.get("healthcheck") or {}
        test = " ".join(_command(health.get("test")))
        if is_siyu and command[:1] and command[0] in PORT_SETTING:
            if not health:
                problems.append(f"{where}: `siyu {command[0]}` has no healthcheck")
            for port, path in _URL.findall(test):
                problems += probe_problems(routes, command[0], path, int(port), effective, where)
            if health and not _URL.search(test):
                problems.append(f"{where}: healthcheck calls no URL: {test!r}")
        if is_siyu and command[:1] == ["worker"]:
            data_dir = effective_setting(effective, "data_dir")
            if data_dir not in mounts:
                problems.append(f"{where}: worker state {data_dir} is not on a volume")
            else:
                worker_volumes[name] = mounts[data_dir]
            worker_hosts[name] = str(svc.get("hostname", name))
            deps = svc.get("depends_on") or {}
            migrate = [
                d
                for d, cond in (deps.items() if isinstance(deps, dict) else [])
                if _command(services.get(d, {}).get("command"))[:1] == ["migrate"]
                and cond.get("condition") == "service_completed_successfully"
            ]
            if not migrate:
                problems.append(f"{where}: does not wait for a `siyu migrate` service to succeed")
    # `up --wait` counts a one-shot service's exit as a failure unless a long-running
    # service waits for it to complete (docker/compose#10596).
    for name, svc in services.items():
        if svc.get("restart") != "no":
            continue
        adopted = [
            other
            for other, o in services.items()
            if o.get("restart") != "no"
            and isinstance(o.get("depends_on"), dict)
            and (o["depends_on"].get(name) or {}).get("condition")
            == "service_completed_successfully"
        ]
        if not adopted:
            problems.append(f"compose service {name}: one-shot, but no service waits for it")
    for what, seen in (("hostname", worker_hosts), ("state volume", worker_volumes)):
        values = list(seen.values())
        if len(set(values)) != len(values):
            problems.append(f"compose: workers share a {what}: {seen}")
    return problems


def check_compose_scrapes(compose: Mapping[str, Any], base: Path, df: Dockerfile) -> list[str]:
    """Prometheus in the stack scrapes every worker and collector where it listens, and its
    rule files resolve to files mounted from the repository."""
    services: Mapping[str, Any] = compose.get("services") or {}
    prometheus = [
        (name, svc) for name, svc in services.items() if "prometheus" in str(svc.get("image"))
    ]
    if not prometheus:
        return ["compose: no Prometheus service"]
    name, svc = prometheus[0]
    args = _command(svc.get("command"))
    config_path = next(
        (a.partition("=")[2] for a in args if a.startswith("--config.file=")),
        "/etc/prometheus/prometheus.yml",
    )
    mounts = dict(reversed(_volume(v)) for v in svc.get("volumes") or [])
    if config_path not in mounts:
        return [f"compose service {name}: its config {config_path} is not mounted"]
    config = yaml.safe_load((base / mounts[config_path]).read_text())
    problems: list[str] = []
    config_dir = str(Path(config_path).parent)
    for pattern in config.get("rule_files") or []:
        target = pattern if pattern.startswith("/") else f"{config_dir}/{pattern}"
        directory, _, glob = target.rpartition("/")
        source = mounts.get(directory)
        if source is None or not list((base / source).glob(glob)):
            problems.append(f"compose service {name}: rule files {target} match no mounted file")
    targets = {
        t
        for job in config.get("scrape_configs") or []
        for static in job.get("static_configs") or []
        for t in static.get("targets") or []
    }
    defaults = df.env()
    for svc_name, other in services.items():
        command = _command(other.get("command"))
        if not str(other.get("image", "")).startswith(f"{SIYU_IMAGE}:") or not command:
            continue
        if command[0] not in PORT_SETTING:
            continue
        env = {**defaults, **_service_env(other)}
        port = effective_setting(env, PORT_SETTING[command[0]])
        host = str(other.get("hostname", svc_name))
        if f"{host}:{port}" not in targets:
            problems.append(f"compose: Prometheus does not scrape {svc_name} at {host}:{port}")
    return problems


def check_compose_grafana(compose: Mapping[str, Any], base: Path) -> list[str]:
    """Grafana in the stack: a file mounted over a provisioning file replaces one that exists
    and keeps its data sources (uid, name, type); every ``${VAR}`` a provisioning file reads
    is in Grafana's environment; the dashboard providers' paths are mounted."""
    services: Mapping[str, Any] = compose.get("services") or {}
    grafana = [(n, s) for n, s in services.items() if "grafana" in str(s.get("image"))]
    if not grafana:
        return ["compose: no Grafana service"]
    name, svc = grafana[0]
    where = f"compose service {name}"
    mounts = {t: s for s, t in (_volume(v) for v in svc.get("volumes") or [])}
    env = _service_env(svc)
    problems: list[str] = []

    def host_path(target: str) -> Path | None:
        """The repository file that Grafana sees at ``target`` (the deepest mount wins)."""
        for mount in sorted(mounts, key=len, reverse=True):
            if (target == mount or target.startswith(mount + "/")) and mounts[mount].startswith(
                "."
            ):
                return base / mounts[mount] / target[len(mount) :].lstrip("/")
        return None

    provisioning = "/etc/grafana/provisioning"
    for target, source in mounts.items():
        parents = [m for m in mounts if target.startswith(m + "/") and mounts[m].startswith(".")]
        if not parents or not source.startswith("."):
            continue
        parent = max(parents, key=len)
        shadowed = base / mounts[parent] / target[len(parent) :].lstrip("/")
        if not shadowed.exists():
            problems.append(f"{where}: {source} is mounted over {shadowed}, which does not exist")
        elif "/datasources/" in target and (base / source).is_file():

            def sources(path: Path) -> set[tuple[str, str, str]]:
                doc = yaml.safe_load(path.read_text()) or {}
                return {(d["uid"], d["name"], d["type"]) for d in doc.get("datasources") or []}

            if sources(base / source) != sources(shadowed):
                problems.append(f"{where}: {source} has other data sources than {shadowed}")
    for sub in ("datasources", "dashboards"):
        directory = host_path(f"{provisioning}/{sub}")
        if directory is None or not directory.is_dir():
            continue
        for file in sorted(directory.glob("*.y*ml")):
            seen = host_path(f"{provisioning}/{sub}/{file.name}") or file
            doc = yaml.safe_load(seen.read_text()) or {}
            # Grafana expands $VAR and ${VAR} in the values of these files (not in comments).
            for var in sorted({v for s in _strings(doc) for v in interpolated_names(s)}):
                if var not in env:
                    problems.append(f"{where}: {seen.name} reads ${{{var}}}, which is not set")
            for provider in doc.get("providers") or []:
                path = (provider.get("options") or {}).get("path", "")
                found = host_path(path)
                if found is None or not found.is_dir():
                    problems.append(f"{where}: dashboards path {path} is not mounted")
    return problems


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _volume(vol: Any) -> tuple[str, str]:
    if isinstance(vol, str):
        source, _, rest = vol.partition(":")
        return source, rest.split(":")[0]
    return str(vol.get("source", "")), str(vol.get("target", ""))


# --- Kubernetes -----------------------------------------------------------------------------


def load_manifests(directory: Path) -> tuple[dict[str, Any], list[str], list[dict[str, Any]]]:
    """The kustomization, problems with its resource list, and every listed document."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    problems: list[str] = []
    docs: list[dict[str, Any]] = []
    listed = kustomization.get("resources") or []
    for resource in listed:
        path = directory / resource
        if not path.is_file():
            problems.append(f"kustomization: resource {resource} does not exist")
            continue
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for path in sorted(directory.glob("*.yaml")):
        if path.name != "kustomization.yaml" and path.name not in listed:
            problems.append(f"kustomization: {path.name} is not listed under resources")
    return kustomization, problems, docs


def _pod_spec(doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
    if doc.get("kind") in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
        return doc["spec"]["template"]["spec"]
    return None


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def _labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def check_manifests(
    kustomization: Mapping[str, Any], docs: list[dict[str, Any]], df: Dockerfile, routes: Routes
) -> list[str]:
    """The manifests against the code: settings, images, probes, state, budgets, selectors."""
    problems: list[str] = []
    data: dict[tuple[str, str], dict[str, str]] = {}
    for kind in ("ConfigMap", "Secret"):
        for doc in _by_kind(docs, kind):
            name = doc["metadata"]["name"]
            values = {**(doc.get("data") or {}), **(doc.get("stringData") or {})}
            data[(kind, name)] = {str(k): str(v) for k, v in values.items()}
            problems += unknown_siyu_variables(list(values), f"{kind} {name}")
            if kind == "ConfigMap":  # Secrets hold placeholders, checked for names only
                problems += invalid_setting_values(data[(kind, name)], f"ConfigMap {name}")
    for image in kustomization.get("images") or []:
        ref = f"{image.get('newName', image['name'])}:{image.get('newTag', '')}"
        if "digest" not in image:
            problems += filter(None, [image_problem(ref, "kustomization images")])
            problems += filter(None, [siyu_image_problem(ref, "kustomization images")])
    workloads = [d for d in docs if _pod_spec(d) is not None]
    for doc in workloads:
        spec = _pod_spec(doc)
        assert spec is not None
        kind, name = doc["kind"], doc["metadata"]["name"]
        pod_labels = doc["spec"]["template"]["metadata"].get("labels") or {}
        selector = (doc["spec"].get("selector") or {}).get("matchLabels")
        if selector is not None and not _labels_match(selector, pod_labels):
            problems.append(f"{kind} {name}: selector does not match its pod labels")
        for c in [*(spec.get("initContainers") or []), *spec["containers"]]:
            where = f"{kind} {name} container {c['name']}"
            problems += _container_problems(c, spec, doc, data, df, routes, where)
    for doc in _by_kind(docs, "PodDisruptionBudget") + _by_kind(docs, "Service"):
        spec = doc["spec"]
        selector = spec.get("selector") or {}
        if doc["kind"] == "PodDisruptionBudget":
            selector = selector.get("matchLabels") or {}
        matched = [
            w
            for w in workloads
            if w["kind"] != "Job"
            and _labels_match(selector, w["spec"]["template"]["metadata"].get("labels") or {})
        ]
        where = f"{doc['kind']} {doc['metadata']['name']}"
        if not matched:
            problems.append(f"{where}: selects no Deployment or StatefulSet")
        if doc["kind"] == "Service":
            for port in spec.get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                for w in matched:
                    names = {
                        p.get("name"): p["containerPort"]
                        for c in _pod_spec(w)["containers"]  # type: ignore[index]
                        for p in c.get("ports") or []
                    }
                    if target not in names and target not in names.values():
                        problems.append(f"{where}: targetPort {target} is no port of {w['kind']}")
    for sts in _by_kind(docs, "StatefulSet"):
        service = sts["spec"].get("serviceName")
        headless = [
            s
            for s in _by_kind(docs, "Service")
            if s["metadata"]["name"] == service and s["spec"].get("clusterIP") == "None"
        ]
        if not headless:
            problems.append(f"StatefulSet {sts['metadata']['name']}: no headless Service {service}")
    return problems


def _container_env(
    c: Mapping[str, Any], data: dict[tuple[str, str], dict[str, str]], where: str
) -> tuple[dict[str, str], list[str]]:
    env: dict[str, str] = {}
    problems: list[str] = []
    for source in c.get("envFrom") or []:
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if key in source:
                ref = source[key]["name"]
                if (kind, ref) not in data:
                    problems.append(f"{where}: envFrom {kind} {ref} does not exist")
                env.update(data.get((kind, ref), {}))
    for var in c.get("env") or []:
        name = var["name"]
        problems += unknown_siyu_variables([name], where)
        if "value" in var:
            env[name] = str(var["value"])
            continue
        value_from = var.get("valueFrom") or {}
        for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
            if key in value_from:
                ref = value_from[key]
                values = data.get((kind, ref["name"]))
                if values is None or ref["key"] not in values:
                    problems.append(f"{where}: {name} refers to missing {kind} key {ref}")
                else:
                    env[name] = values[ref["key"]]
    return env, problems


def _container_problems(
    c: Mapping[str, Any],
    spec: Mapping[str, Any],
    doc: Mapping[str, Any],
    data: dict[tuple[str, str], dict[str, str]],
    df: Dockerfile,
    routes: Routes,
    where: str,
) -> list[str]:
    problems: list[str] = []
    image = c.get("image", "")
    problems += filter(None, [image_problem(image, where), siyu_image_problem(image, where)])
    resources = c.get("resources") or {}
    for part in ("requests", "limits"):
        if "memory" not in (resources.get(part) or {}):
            problems.append(f"{where}: no memory {part}")
    env, env_problems = _container_env(c, data, where)
    problems += env_problems
    if image.partition(":")[0].rsplit("/", 1)[-1] != SIYU_IMAGE:
        return problems
    effective = {**df.env(), **env}
    args = [str(a) for a in c.get("args") or c.get("command") or []]
    problems += unknown_commands(args[:1], where)
    command = args[0] if args else ""
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
    probes = [(k, c[k]) for k in ("startupProbe", "livenessProbe", "readinessProbe") if k in c]
    if command in PORT_SETTING:
        for needed in ("livenessProbe", "readinessProbe"):
            if needed not in c:
                problems.append(f"{where}: no {needed}")
        problems += exposed_host_problems(command, effective, where)
    for kind, probe in probes:
        http = probe.get("httpGet")
        if http is None:
            problems.append(f"{where}: {kind} is not an HTTP probe")
            continue
        port = http["port"]
        number = ports.get(port, port) if isinstance(port, str) else port
        if isinstance(number, str):
            problems.append(f"{where}: {kind} port {port!r} is no named port of the container")
            continue
        problems += probe_problems(routes, command, http["path"], number, effective, where)
    if command == "worker":
        problems += _worker_state_problems(c, spec, doc, effective, where)
    return problems


def _worker_state_problems(
    c: Mapping[str, Any],
    spec: Mapping[str, Any],
    doc: Mapping[str, Any],
    env: Mapping[str, str],
    where: str,
) -> list[str]:
    problems = []
    if doc.get("kind") != "StatefulSet":
        problems.append(f"{where}: workers keep state; run them as a StatefulSet")
        return problems
    if effective_setting(env, "store") != "rocksdb":
        problems.append(f"{where}: SIYU_STORE is not rocksdb: state would not be on the volume")
    if int(effective_setting(env, "standby_replicas")) < 1:
        problems.append(f"{where}: SIYU_STANDBY_REPLICAS is 0: no warm copy of any table")
    claims = {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates") or []}
    data_dir = effective_setting(env, "data_dir")
    on_claim = [
        m for m in c.get("volumeMounts") or [] if m["mountPath"] == data_dir and m["name"] in claims
    ]
    if not on_claim:
        problems.append(f"{where}: SIYU_DATA_DIR {data_dir} is not a volumeClaimTemplate mount")
    return problems


def load_all() -> tuple[Dockerfile, dict[str, Any], str, dict[str, Any], list[str], list[Any]]:
    """Every deployment file, parsed: (Dockerfile, compose, compose text, kustomization,
    kustomization problems, manifest documents)."""
    df = parse_dockerfile(DOCKERFILE.read_text())
    text = COMPOSE.read_text()
    kustomization, problems, docs = load_manifests(K8S)
    return df, yaml.safe_load(text), text, kustomization, problems, docs
