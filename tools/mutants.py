"""Mutation testing of lmlab's numeric core (make mutants; not part of make test).

    python -m tools.mutants                  # every module below, one after the other
    python -m tools.mutants attention optim  # some of them
    python -m tools.mutants --report         # rewrite the report from the last runs
    python -m tools.mutants --survivors rnn  # after adding tests: rerun only the survivors

mutmut (https://mutmut.readthedocs.io) plants one small bug at a time in a module (``+``
for ``-``, ``<`` for ``<=``, a changed constant, a dropped argument, ...) and runs that
module's tests against it; a mutant the tests do not notice "survives". Each module runs
in its own working copy under ``.mutants/<module>/`` with only its own test files, so a
2-core machine gets through the whole core in about an hour (niced: it yields to other work).

The report (``tests/mutants.md``) gives, per module, the kill rate over all mutants and
over the mutants that change behaviour: a mutant whose only change is inside a string
literal (an error message, a label) is counted apart, since no numeric test should pin
message wording. Survivors that change code are listed with their diffs: read them, they
are either a missing test or an equivalent mutant (a change that cannot alter any output).
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutants"
REPORT = ROOT / "tests" / "mutants.md"

#: module -> the test files that exercise it
MODULES: dict[str, list[str]] = {
    "attention": ["test_attention.py"],
    "rnn": ["test_rnn.py"],
    "optim": ["test_optim.py"],
    "transformer": ["test_transformer.py", "test_modern.py", "test_presets.py"],
    "rope": ["test_modern.py"],
    "moe": ["test_modern.py"],
    "generate": ["test_generate.py"],
    "quantize": ["test_quantize.py"],
    "tokenizer": ["test_tokenizer.py"],
    "scaling": ["test_scaling.py", "test_scaling_presets.py"],
}

_CONFIG = """\
[tool.mutmut]
source_paths = ["lmlab"]
only_mutate = ["lmlab/{module}.py"]
pytest_add_cli_args_test_selection = [{tests}]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x", "-p", "no:randomly"]

[tool.pytest.ini_options]
addopts = "-p no:cacheprovider"
"""


def prepare(module: str) -> Path:
    """A fresh working copy with lmlab and only this module's tests."""
    work = WORK / module
    shutil.rmtree(work, ignore_errors=True)
    (work / "tests" / "unit").mkdir(parents=True)
    shutil.copytree(ROOT / "lmlab", work / "lmlab", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("__init__.py", "conftest.py"):
        shutil.copy(ROOT / "tests" / name, work / "tests" / name)
    tests = [t for t in MODULES[module] if (ROOT / "tests" / "unit" / t).exists()]
    for test in tests:
        shutil.copy(ROOT / "tests" / "unit" / test, work / "tests" / "unit" / test)
    quoted = ", ".join(f'"tests/unit/{t}"' for t in tests)
    (work / "pyproject.toml").write_text(_CONFIG.format(module=module, tests=quoted))
    return work


def run(module: str, children: int) -> None:
    work = prepare(module)
    mutmut = Path(sys.executable).with_name("mutmut")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    print(f"== {module}: mutmut run in {work}", flush=True)
    with open(work / "run.log", "w") as log:
        subprocess.run(["nice", "-n", "15", str(mutmut), "run", "--max-children", str(children)],
                       cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)


def survivors(module: str) -> list[str]:
    """Mutants of the last run that no test killed, that no test reached, or not yet run."""
    meta = WORK / module / "mutants" / "lmlab" / f"{module}.py.meta"
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    return sorted(key for key, code in codes.items() if code in (None, 0, 33))


def rerun_survivors(module: str, children: int) -> None:
    """After tests were added: bring the module's current tests into its working copy and
    run only the survivors again (a killed mutant stays killed when tests are only added)."""
    work = WORK / module
    if (ROOT / "lmlab" / f"{module}.py").read_bytes() != (work / "lmlab" / f"{module}.py").read_bytes():
        print(f"== {module}: lmlab/{module}.py changed since its run: a full run instead")
        run(module, children)
        return
    names = survivors(module)
    # the rest of lmlab as it is now (the tests may use what changed elsewhere); the
    # mutated module itself stays as mutmut generated it
    for target in (work / "lmlab", work / "mutants" / "lmlab"):
        for source in (ROOT / "lmlab").rglob("*.py"):
            relative = source.relative_to(ROOT / "lmlab")
            if relative != Path(f"{module}.py"):
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source, target / relative)
    for test in MODULES[module]:
        source = ROOT / "tests" / "unit" / test
        if source.exists():
            for target in (work / "tests" / "unit", work / "mutants" / "tests" / "unit"):
                if target.exists():
                    shutil.copy(source, target / test)
    mutmut = Path(sys.executable).with_name("mutmut")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    print(f"== {module}: {len(names)} survivors run again in {work}", flush=True)
    with open(work / "rerun.log", "w") as log:
        subprocess.run(["nice", "-n", "15", str(mutmut), "run", "--max-children", str(children),
                        *names], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                       check=False)


# --------------------------------------------------------------------------- report


def _masked_tokens(source: str) -> list[tuple[int, str]]:
    """The token stream with every string literal replaced by one placeholder."""
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                        tokenize.DEDENT):
            continue
        is_string = tok.type == tokenize.STRING or tok.type in _FSTRING_TYPES
        out.append((tokenize.STRING, "S") if is_string else (tok.type, tok.string))
    return out


_FSTRING_TYPES = {getattr(tokenize, n) for n in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END")
                  if hasattr(tokenize, n)}


def _functions(mutated: Path) -> dict[str, str]:
    """mutant (or original) function name -> its source, from mutmut's spans file."""
    lines = mutated.read_text().splitlines(keepends=True)
    spans = json.loads(mutated.with_name(mutated.name + ".spans").read_text())["spans"]
    return {name: "".join(lines[a - 1:b]) for name, (a, b) in spans.items()}


def _strip_name(source: str, name: str) -> str:
    return source.replace(name, "FN", 1)


_DEVICE_ARG = re.compile(r"\s*device=[\w.]+(\(\))?,?\s*")


def _kind(original: str, mutant: str) -> str:
    """'message' when only string literals or the arguments of a raise changed, 'device'
    when only a ``device=`` argument changed (no test can tell on a CPU-only machine),
    else 'code'."""
    try:
        if _masked_tokens(original) == _masked_tokens(mutant):
            return "message"
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    changed = [(a, b) for a, b in zip(original.splitlines(), mutant.splitlines()) if a != b]
    if len(original.splitlines()) != len(mutant.splitlines()) or not changed:
        return "code"
    raise_type = re.compile(r"^\s*raise\s+(\w+)")
    if all(raise_type.match(a) and raise_type.match(b)
           and raise_type.match(a).group(1) == raise_type.match(b).group(1) for a, b in changed):
        return "message"
    if all(_DEVICE_ARG.sub("", a) == _DEVICE_ARG.sub("", b) for a, b in changed):
        return "device"
    return "code"


def classify(module: str) -> dict | None:
    work = WORK / module
    mutated = work / "mutants" / "lmlab" / f"{module}.py"
    meta_path = mutated.with_name(mutated.name + ".meta")
    if not meta_path.exists():
        return None
    codes = json.loads(meta_path.read_text())["exit_code_by_key"]
    functions = _functions(mutated)
    killed, survived, message_only, device_only, untested, timeout = 0, [], 0, 0, 0, 0
    for key, code in codes.items():
        short = key.split(".")[-1]
        if code is None or code == 33:
            untested += 1  # no test reaches this function (33: mutmut found no test for it)
        elif code == 0:
            orig = short.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"
            kind = _kind(_strip_name(functions.get(orig, ""), orig),
                         _strip_name(functions.get(short, ""), short))
            if kind == "message":
                message_only += 1
            elif kind == "device":
                device_only += 1
            else:
                survived.append(short)
        elif code in (-24, 36, 152):  # killed by mutmut's time limit (SIGXCPU) or segfault
            timeout += 1
        else:
            killed += 1
    total = len(codes)
    behavioural = total - message_only - device_only - untested
    return dict(module=module, total=total, killed=killed + timeout, timeout=timeout,
                survived=survived, message_only=message_only, device_only=device_only,
                untested=untested,
                rate_all=(killed + timeout) / max(1, total - untested),
                rate_behaviour=(killed + timeout) / max(1, behavioural))


def _diff(functions: dict[str, str], name: str) -> str:
    """The changed lines of mutant ``name`` against its original, as a unified diff."""
    orig = name.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"
    a = _strip_name(functions.get(orig, ""), orig).splitlines()
    b = _strip_name(functions.get(name, ""), name).splitlines()
    lines = difflib.unified_diff(a, b, lineterm="", n=0)
    return "\n".join(ln for ln in lines if ln[:1] in "-+" and ln[:3] not in ("---", "+++"))


def report(modules: list[str]) -> str:
    rows, details = [], []
    for module in modules:
        result = classify(module)
        if result is None:
            rows.append(f"| {module} | not run | | | | | | |")
            continue
        r = result
        rows.append(
            f"| {module} | {r['total']} | {r['untested']} | {r['message_only']} | "
            f"{r['device_only']} | {len(r['survived'])} | {100 * r['rate_all']:.1f} % | "
            f"{100 * r['rate_behaviour']:.1f} % |"
        )
        if r["survived"]:
            details.append(f"\n### {module}: {len(r['survived'])} surviving mutants that change code\n")
            functions = _functions(WORK / module / "mutants" / "lmlab" / f"{module}.py")
            for name in r["survived"]:
                details.append(f"`{name}`\n```diff\n{_diff(functions, name)}\n```")
    head = [
        "# Mutation testing of lmlab's numeric core (generated by `make mutants`; do not edit)",
        "",
        f"Generated {dt.date.today().isoformat()} from the runs under `.mutants/`; a module "
        "whose run was stopped early counts its unrun mutants as not reached.",
        "",
        "Per module: mutants made; mutants in functions no test of that module reaches "
        "(left out of both rates); surviving mutants that change only an error message or "
        "a string, and surviving mutants that change only a `device=` argument (no test can "
        "tell them apart on a CPU-only machine), both left out of the second rate; the other "
        "survivors; the kill rate over the reached mutants and over the reached mutants "
        "that can change a result here.",
        "",
        "| module | mutants | not reached | message only | device only | surviving | "
        "killed (reached) | killed (can change a result) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    return "\n".join(head + rows + details) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help=f"some of {', '.join(MODULES)}")
    parser.add_argument("--report", action="store_true", help="only rewrite the report")
    parser.add_argument("--children", type=int, default=2)
    parser.add_argument("--survivors", action="store_true",
                        help="run only the last run's survivors again, with the current tests")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        parser.error(f"unknown modules {unknown}: expected some of {list(MODULES)}")
    modules = args.modules or list(MODULES)
    if not args.report:
        for module in modules:
            if not (ROOT / "lmlab" / f"{module}.py").exists():
                print(f"== {module}: lmlab/{module}.py does not exist, skipped")
                continue
            if args.survivors and (WORK / module / "mutants").exists():
                rerun_survivors(module, args.children)
            else:
                run(module, args.children)
    done = [m for m in MODULES if (WORK / m).exists()]
    REPORT.write_text(report(done))
    print(f"wrote {REPORT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
