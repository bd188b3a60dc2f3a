"""A small CI runner for the shipped recipes: it runs a GitHub Actions workflow's jobs, or a GitLab
pipeline's jobs, the way their runners do, on this machine.

What it does as the real runners do:

* GitHub: a job's and a step's ``if:`` (``${{ }}`` expressions: contexts, ``==``, ``!=``, ``&&``,
  ``||``, ``!``, ``always()``, ``success()``, ``failure()``); ``actions/checkout`` as a ``git clone
  --depth N`` with the step's ``fetch-depth`` (0: the whole history); ``run:`` steps with the shell
  GitHub uses (no ``shell:``: ``bash -e {0}``, without pipefail; ``shell: bash``: ``bash --noprofile
  --norc -eo pipefail {0}``), ``${{ }}`` expanded in the script's text first; the workflow's, job's
  and step's ``env``; ``secrets``; ``GITHUB_OUTPUT``, ``GITHUB_PATH``, ``GITHUB_STEP_SUMMARY``,
  ``GITHUB_EVENT_PATH``; a composite action (``OWNER/reconciler@REF`` is this checkout, as GitHub
  would fetch it) with its inputs, defaults and outputs; ``actions/upload-artifact`` into a folder.
  ``actions/setup-python`` is a no-op: the runner's Python is on PATH.
* GitLab: ``include: component:`` read from ``templates/`` with ``$[[ inputs.x ]]`` interpolated
  (a whole-value array input becomes the array), the project's jobs merged over the included ones,
  ``rules: if:`` (``$VAR``, ``==``, ``!=``, ``&&``, ``||``), global and job ``variables``, the
  predefined ones, ``GIT_DEPTH``, the script run by bash with ``-eo pipefail`` as GitLab's bash
  shell does, and ``allow_failure: exit_codes``.

Anything it does not know (another action, an expression function) is an error, so a recipe can
never pass by being skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
ACTION_REF = re.compile(r"^OWNER/reconciler@")


# --- GitHub expressions ---------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<op>==|!=|&&|\|\||!|\(|\)|,)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z_][A-Za-z0-9_\-]*)*))"
)


class Expression:
    """A GitHub Actions expression, evaluated against contexts (a nested mapping)."""

    def __init__(self, text: str, contexts: Mapping[str, Any], status: str = "success") -> None:
        self.tokens: list[tuple[str, str]] = []
        position = 0
        text = text.strip()
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None or match.end() == position:
                raise ValueError(f"cannot read the expression {text!r} at {position}")
            kind = match.lastgroup or ""
            self.tokens.append((kind, match.group(kind)))
            position = match.end()
        self.contexts = contexts
        self.status = status
        self.index = 0

    def value(self) -> Any:
        result = self._or()
        if self.index != len(self.tokens):
            raise ValueError(f"unexpected {self.tokens[self.index]}")
        return result

    def _peek(self) -> str | None:
        return self.tokens[self.index][1] if self.index < len(self.tokens) else None

    def _or(self) -> Any:
        left = self._and()
        while self._peek() == "||":
            self.index += 1
            right = self._and()
            left = left if _truthy(left) else right
        return left

    def _and(self) -> Any:
        left = self._compare()
        while self._peek() == "&&":
            self.index += 1
            right = self._compare()
            left = right if _truthy(left) else left
        return left

    def _compare(self) -> Any:
        left = self._unary()
        while self._peek() in ("==", "!="):
            op = self.tokens[self.index][1]
            self.index += 1
            right = self._unary()
            equal = _loose(left) == _loose(right)
            left = equal if op == "==" else not equal
        return left

    def _unary(self) -> Any:
        if self._peek() == "!":
            self.index += 1
            return not _truthy(self._unary())
        return self._primary()

    def _primary(self) -> Any:
        kind, text = self.tokens[self.index]
        self.index += 1
        if text == "(":
            inner = self._or()
            self.index += 1  # ")"
            return inner
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if kind == "num":
            return float(text)
        if text in ("true", "false"):
            return text == "true"
        if text == "null":
            return None
        if self._peek() == "(":
            self.index += 2  # "(" ")": the status functions take no arguments
            return {
                "always": True,
                "success": self.status == "success",
                "failure": self.status == "failure",
                "cancelled": False,
            }[text]
        current: Any = self.contexts
        for part in text.split("."):
            current = current.get(part) if isinstance(current, Mapping) else None
        return current


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, 0.0, "")


def _loose(value: Any) -> Any:
    """GitHub compares strings case-insensitively, and null as ''."""
    if value is None:
        return ""
    return value.lower() if isinstance(value, str) else value


def evaluate(condition: Any, contexts: Mapping[str, Any], status: str = "success") -> bool:
    """A job's or step's ``if:`` (without ``${{ }}`` it is an expression all the same)."""
    if condition is None:
        return status == "success"
    text = str(condition).strip()
    if text.startswith("${{") and text.endswith("}}"):
        text = text[3:-2]
    has_status = re.search(r"\b(always|success|failure|cancelled)\(\)", text)
    if not has_status:
        text = f"success() && ({text})"
    return _truthy(Expression(text, contexts, status).value())


def expand(text: Any, contexts: Mapping[str, Any]) -> str:
    """Every ``${{ }}`` in ``text`` replaced by its value, as the runner does before a step runs."""

    def one(match: re.Match[str]) -> str:
        value = Expression(match.group(1), contexts).value()
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    return re.sub(r"\$\{\{(.*?)\}\}", one, str(text))


# --- a runner's job -------------------------------------------------------------------------------


@dataclass
class JobResult:
    """What one job did: its status, its steps' outputs, the summary and log it wrote."""

    name: str
    status: str  # success, failure, skipped (GitLab: also warning)
    exit_code: int = 0
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    summary: str = ""
    log: str = ""
    workspace: Path | None = None


def clone(origin: Path, into: Path, sha: str, depth: int) -> None:
    """``git clone`` as a checkout does: ``--depth N`` (0: everything), then the commit."""
    if into.exists():
        shutil.rmtree(into)
    command = ["git", "clone", "-q"]
    if depth:
        command += ["--depth", str(depth), "--branch", "main"]
    command += [f"file://{origin}", str(into)]
    subprocess.run(command, check=True, capture_output=True)
    fetched = subprocess.run(["git", "-C", str(into), "checkout", "-q", sha], capture_output=True)
    if fetched.returncode:  # a branch of a pull request, not on main: fetch it by its ref
        subprocess.run(
            [
                "git",
                "-C",
                str(into),
                "fetch",
                "-q",
                *(["--depth", str(depth)] if depth else []),
                "origin",
                sha,
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["git", "-C", str(into), "checkout", "-q", sha], check=True, capture_output=True
        )


def _run_script(
    script: str, shell: list[str], env: Mapping[str, str], cwd: Path, where: Path
) -> tuple[int, str]:
    where.write_text(script)
    done = subprocess.run(
        [*shell, str(where)], env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=300
    )
    return done.returncode, done.stdout + done.stderr


def _read_pairs(path: Path) -> dict[str, str]:
    pairs: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if "=" in line:
                key, value = line.split("=", 1)
                pairs[key] = value
    return pairs


@dataclass
class GitHub:
    """Runs a workflow's jobs for one event (see the module docstring)."""

    workflow: Path
    origin: Path  # the repository of the specs (a folder git clones from)
    base_env: Mapping[str, str]  # the runner's environment (PATH, the API's URL...)
    secrets: Mapping[str, str]
    work: Path

    def run(
        self, event_name: str, sha: str, payload: dict[str, Any] | None = None
    ) -> dict[str, JobResult]:
        """Every job of the workflow for this event (jobs whose ``if:`` is false: skipped)."""
        document = yaml.safe_load(self.workflow.read_text())
        self.work.mkdir(parents=True, exist_ok=True)
        event_path = self.work / "event.json"
        event_path.write_text(json.dumps(payload or {}))
        github = {
            "event_name": event_name,
            "sha": sha,
            "repository": "acme/lookups",
            "token": self.secrets.get("GITHUB_TOKEN", "ghs-token"),
            "event": payload or {},
            "workspace": "",
        }
        results = {}
        for name, job in document["jobs"].items():
            contexts = {"github": github, "secrets": dict(self.secrets), "env": {}, "steps": {}}
            if not evaluate(job.get("if"), contexts):
                results[name] = JobResult(name, "skipped")
                continue
            results[name] = self._job(name, job, document.get("env", {}), github, event_path, sha)
        return results

    def _job(
        self,
        name: str,
        job: dict[str, Any],
        workflow_env: dict[str, Any],
        github: dict[str, Any],
        event_path: Path,
        sha: str,
    ) -> JobResult:
        root = self.work / name
        if root.exists():
            shutil.rmtree(root)
        workspace, temp = root / "workspace", root / "temp"
        workspace.mkdir(parents=True)
        temp.mkdir()
        summary = root / "summary.md"
        path_file = root / "path"
        path_file.touch()
        github = {**github, "workspace": str(workspace)}
        contexts: dict[str, Any] = {
            "github": github,
            "secrets": dict(self.secrets),
            "steps": {},
            "runner": {"temp": str(temp), "os": "Linux"},
            "env": {},
        }
        result = JobResult(name, "success", workspace=workspace)
        env_base = {
            **self.base_env,
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_EVENT_NAME": github["event_name"],
            "GITHUB_EVENT_PATH": str(event_path),
            "GITHUB_REPOSITORY": github["repository"],
            "GITHUB_SHA": sha,
            "GITHUB_WORKSPACE": str(workspace),
            "GITHUB_STEP_SUMMARY": str(summary),
            "GITHUB_PATH": str(path_file),
            "RUNNER_TEMP": str(temp),
        }
        status = "success"
        for index, step in enumerate(job["steps"]):
            env = {**env_base}
            for scope in (workflow_env, job.get("env", {}), step.get("env", {})):
                for key, value in scope.items():
                    env[key] = expand(value, {**contexts, "env": env})
            extra = [p for p in path_file.read_text().splitlines() if p]
            env["PATH"] = os.pathsep.join([*reversed(extra), env_base["PATH"]])
            contexts["env"] = env
            if not evaluate(step.get("if"), contexts, status):
                continue
            code, outputs, log = self._step(
                step, env, contexts, workspace, root / f"step{index}", sha
            )
            result.log += log
            if step.get("id"):
                contexts["steps"][step["id"]] = {
                    "outputs": outputs,
                    "outcome": "success" if code == 0 else "failure",
                }
                result.outputs[step["id"]] = outputs
            if code != 0:
                status = "failure"
                result.exit_code = code
        result.status = status
        result.summary = summary.read_text() if summary.exists() else ""
        return result

    def _step(
        self,
        step: dict[str, Any],
        env: dict[str, str],
        contexts: dict[str, Any],
        workspace: Path,
        scratch: Path,
        sha: str,
    ) -> tuple[int, dict[str, str], str]:
        scratch.mkdir(parents=True, exist_ok=True)
        uses = step.get("uses")
        with_ = {k: expand(v, contexts) for k, v in (step.get("with") or {}).items()}
        if uses is None:
            return self._run(step, env, contexts, workspace, scratch)
        if uses.startswith("actions/checkout@"):
            clone(self.origin, workspace, sha, int(with_.get("fetch-depth", 1)))
            return 0, {}, ""
        if uses.startswith("actions/setup-python@"):
            return 0, {}, ""
        if uses.startswith("actions/upload-artifact@"):
            target = self.work / "artifacts" / with_["name"]
            target.mkdir(parents=True, exist_ok=True)
            source = Path(with_["path"])
            if not source.exists():
                return 1, {}, f"upload-artifact: no file at {source}\n"
            shutil.copy(source, target / source.name)
            return 0, {}, ""
        if ACTION_REF.match(uses):
            return self._composite(with_, env, contexts, workspace, scratch)
        raise ValueError(f"this runner does not know the action {uses}")

    def _run(
        self,
        step: dict[str, Any],
        env: dict[str, str],
        contexts: dict[str, Any],
        cwd: Path,
        scratch: Path,
    ) -> tuple[int, dict[str, str], str]:
        shell = step.get("shell")
        if shell is None:
            command = ["bash", "-e"]
        elif shell == "bash":
            command = ["bash", "--noprofile", "--norc", "-eo", "pipefail"]
        else:
            raise ValueError(f"this runner does not know the shell {shell}")
        scratch.mkdir(parents=True, exist_ok=True)
        output = scratch / "output"
        output.touch()
        code, log = _run_script(
            expand(step["run"], contexts),
            command,
            {**env, "GITHUB_OUTPUT": str(output)},
            cwd,
            scratch / "script.sh",
        )
        return code, _read_pairs(output), log

    def _composite(
        self,
        with_: dict[str, str],
        env: dict[str, str],
        contexts: dict[str, Any],
        workspace: Path,
        scratch: Path,
    ) -> tuple[int, dict[str, str], str]:
        action = yaml.safe_load((ROOT / "action.yml").read_text())
        inputs = {}
        for name, spec in action["inputs"].items():
            if name in with_:
                inputs[name] = with_[name]
            elif spec.get("required"):
                raise ValueError(f"the action needs the input {name}")
            else:
                inputs[name] = expand(spec.get("default", ""), contexts)
        unknown = set(with_) - set(action["inputs"])
        if unknown:
            raise ValueError(f"the action has no input {sorted(unknown)}")
        inner: dict[str, Any] = {
            **contexts,
            "inputs": inputs,
            "github": {**contexts["github"], "action_path": str(ROOT)},
            "steps": {},
        }
        log = ""
        for index, step in enumerate(action["runs"]["steps"]):
            step_env = {**env, "GITHUB_ACTION_PATH": str(ROOT)}
            for key, value in (step.get("env") or {}).items():
                step_env[key] = expand(value, inner)
            path_file = Path(env["GITHUB_PATH"])
            extra = [p for p in path_file.read_text().splitlines() if p]
            step_env["PATH"] = os.pathsep.join([*reversed(extra), self.base_env["PATH"]])
            code, outputs, out = self._run(step, step_env, inner, workspace, scratch / f"a{index}")
            log += out
            if step.get("id"):
                inner["steps"][step["id"]] = {"outputs": outputs}
            if code != 0:
                return code, self._outputs(action, inner), log
        return 0, self._outputs(action, inner), log

    @staticmethod
    def _outputs(action: dict[str, Any], inner: dict[str, Any]) -> dict[str, str]:
        return {name: expand(spec["value"], inner) for name, spec in action["outputs"].items()}


# --- GitLab -------------------------------------------------------------------------------------

_INPUT = re.compile(r"\$\[\[\s*inputs\.([A-Za-z0-9_-]+)\s*\]\]")


def interpolate(text: str, inputs: Mapping[str, Any]) -> Any:
    """A component's body with ``$[[ inputs.x ]]`` replaced; a value that is nothing but one
    input takes the input's own type (an array stays an array)."""
    body = yaml.safe_load(text)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {walk(k): walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str):
            whole = _INPUT.fullmatch(node.strip())
            if whole:
                return inputs[whole.group(1)]
            return _INPUT.sub(lambda m: str(inputs[m.group(1)]), node)
        return node

    return walk(body)


def component(path: Path, given: Mapping[str, Any]) -> dict[str, Any]:
    """The jobs a component adds for ``given`` inputs (defaults filled, unknown ones refused)."""
    header, body = path.read_text().split("\n---\n", 1)
    spec = yaml.safe_load(header)["spec"]["inputs"]
    unknown = set(given) - set(spec)
    if unknown:
        raise ValueError(f"the component has no input {sorted(unknown)}")
    inputs = {}
    for name, options in spec.items():
        if name in given:
            value = given[name]
        elif "default" in (options or {}):
            value = options["default"]
        else:
            raise ValueError(f"the component needs the input {name}")
        allowed = (options or {}).get("options")
        if allowed and value not in allowed:
            raise ValueError(f"input {name}: {value!r} is not one of {allowed}")
        inputs[name] = value
    result: dict[str, Any] = interpolate(body, inputs)
    return result


_RULE_TOKEN = re.compile(
    r'\s*(?:(?P<var>\$[A-Za-z_][A-Za-z0-9_]*)|(?P<str>"[^"]*"|\'[^\']*\')|(?P<op>==|!=|&&|\|\||\(|\)))'
)


def rule_matches(condition: str, variables: Mapping[str, str]) -> bool:
    """A ``rules: if:`` of ``$VAR``, quoted strings, ``==``, ``!=``, ``&&``, ``||``, parentheses."""
    tokens = []
    position = 0
    while position < len(condition.strip()):
        match = _RULE_TOKEN.match(condition.strip(), position)
        if match is None:
            raise ValueError(f"cannot read the rule {condition!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    index = 0

    def primary() -> Any:
        nonlocal index
        kind, text = tokens[index]
        index += 1
        if text == "(":
            value = either()
            index += 1
            return value
        if kind == "var":
            return variables.get(text[1:])  # unset: null
        return text[1:-1]

    def compare() -> Any:
        nonlocal index
        left = primary()
        if index < len(tokens) and tokens[index][1] in ("==", "!="):
            op = tokens[index][1]
            index += 1
            right = primary()
            return (left == right) if op == "==" else (left != right)
        return left not in (None, "")

    def both() -> bool:
        nonlocal index
        value = bool(compare())
        while index < len(tokens) and tokens[index][1] == "&&":
            index += 1
            value = bool(compare()) and value
        return value

    def either() -> bool:
        nonlocal index
        value = both()
        while index < len(tokens) and tokens[index][1] == "||":
            index += 1
            value = both() or value
        return value

    return either()


@dataclass
class GitLab:
    """Runs a pipeline's jobs for one pipeline source (see the module docstring)."""

    config: Path
    origin: Path
    base_env: Mapping[str, str]
    project_variables: Mapping[str, str]  # CI/CD variables (masked ones included)
    work: Path

    def jobs(self) -> dict[str, dict[str, Any]]:
        """Every job: the components' first, the project's own merged over them."""
        document = yaml.safe_load(self.config.read_text())
        jobs: dict[str, dict[str, Any]] = {}
        for include in document.get("include", []):
            where = include["component"]
            match = re.fullmatch(r"\$CI_SERVER_FQDN/OWNER/reconciler/([a-z-]+)@v[0-9.]+", where)
            if not match:
                raise ValueError(f"this runner does not know the component {where}")
            jobs.update(
                component(ROOT / "templates" / f"{match.group(1)}.yml", include.get("inputs", {}))
            )
        for name, job in document.items():
            if name in ("include", "variables", "stages", "default", "workflow"):
                continue
            jobs[name] = {**jobs.get(name, {}), **job}
        return jobs

    def run(self, variables: Mapping[str, str], sha: str) -> dict[str, JobResult]:
        """The pipeline for ``variables`` (CI_PIPELINE_SOURCE and the like)."""
        document = yaml.safe_load(self.config.read_text())
        results = {}
        for name, job in self.jobs().items():
            env = {
                **self.base_env,
                "CI": "true",
                "GITLAB_CI": "true",
                "CI_DEFAULT_BRANCH": "main",
                "CI_PROJECT_ID": "42",
                **self.project_variables,
                **{k: str(v) for k, v in (document.get("variables") or {}).items()},
                **variables,
            }
            chosen = False
            for rule in job.get("rules", []):
                if "if" not in rule or rule_matches(rule["if"], env):
                    chosen = rule.get("when", "on_success") != "never"
                    break
            if not chosen:
                results[name] = JobResult(name, "skipped")
                continue
            results[name] = self._job(name, job, env, sha)
        return results

    def _job(self, name: str, job: dict[str, Any], env: dict[str, str], sha: str) -> JobResult:
        root = self.work / name
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        workspace = root / "workspace"
        for key, value in (job.get("variables") or {}).items():
            env[key] = re.sub(
                r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), ""), str(value)
            )
        clone(self.origin, workspace, sha, int(env.get("GIT_DEPTH", "20") or 0))
        script = "\n".join(job["script"]) + "\n"
        code, log = _run_script(
            script, ["bash", "-eo", "pipefail"], env, workspace, root / "script.sh"
        )
        allowed = (
            (job.get("allow_failure") or {}).get("exit_codes", [])
            if isinstance(job.get("allow_failure"), dict)
            else []
        )
        status = "success" if code == 0 else ("warning" if code in allowed else "failure")
        return JobResult(name, status, code, log=log, workspace=workspace)
