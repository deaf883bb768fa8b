#!/usr/bin/env python3
"""A small linter for Thaw's Dockerfiles (docker/Dockerfile, Dockerfile.cpu).

Docker's engine does not run where the tests run and hadolint is not
packaged, so this checks what can be checked without building:

  - parsing: instructions, line continuations, comments, global ARGs and
    their substitution into FROM;
  - multi-stage: a stage `AS build` and a final stage `AS runtime`;
  - base images pinned (a tag or a digest, never :latest or no tag); CUDA:
    build on a *-devel-* image, run on the matching *-runtime-* image;
  - apt: `apt-get update && apt-get install -y --no-install-recommends ...
    && rm -rf /var/lib/apt/lists/*` in one RUN; `apt-get`, not `apt`;
  - final stage: a non-root USER, EXPOSE 8080, ENV PORT=8080 and a
    THAW_CACHE_DIR under /tmp, ENTRYPOINT in exec (JSON) form running
    thaw-runtime, no build tools or -dev packages;
  - COPY --from=build copies only build/bin/<x> where x is a CMake
    executable target and one of thaw-runtime, thaw; ADD is not used;
  - the build stage installs every package scripts/deps.sh installs for
    building, and runs a Release CMake build (CUDA on for the GPU image);
  - the runtime stage's library packages match the build stage's -dev
    packages, and (when build/bin/<x> exists) the DT_NEEDED libraries of the
    binaries: each needed library has a package, and no package is unneeded.

Usage: lint_dockerfile.py [DOCKERFILE...]   (default: both of docker/)
Exit: 0 pass, 1 fail, 77 skip (no Dockerfile found).
Env: THAW_SOURCE_DIR (repo root; default: this script's repo), THAW_BIN
(directory of the built binaries; default <repo>/build/bin).
"""

import json
import os
import re
import shlex
import subprocess
import sys

ROOT = os.environ.get("THAW_SOURCE_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
BIN = os.environ.get("THAW_BIN") or os.path.join(ROOT, "build", "bin")
ALLOWED_BINARIES = {"thaw-runtime", "thaw"}
ENTRY_BINARY = "thaw-runtime"

# scripts/deps.sh packages only used by tests, benchmarks and fuzzing.
DEPS_TEST_ONLY = {
    "nginx-light",
    "fio",
    "python3",
    "python3-venv",
    "python3-pip",
    "clang",
    "libclang-rt-14-dev",
    "bc",
    "postgresql",
}

# Shared library (soname without version) -> runtime packages that ship it,
# across Debian 12 and Ubuntu 24.04 (the t64 renames); and the -dev package
# that builds against it.
LIBS = {
    "libjansson.so": ({"libjansson4"}, "libjansson-dev"),
    "libcurl.so": ({"libcurl4", "libcurl4t64"}, "libcurl4-openssl-dev"),
    "libxxhash.so": ({"libxxhash0"}, "libxxhash-dev"),
    "liburing.so": ({"liburing2"}, "liburing-dev"),
    "libpcre2-8.so": ({"libpcre2-8-0"}, "libpcre2-dev"),
    "libutf8proc.so": ({"libutf8proc2", "libutf8proc3"}, "libutf8proc-dev"),
    "libzip.so": ({"libzip4", "libzip4t64"}, "libzip-dev"),
    "libpq.so": ({"libpq5"}, "libpq-dev"),
    "libmicrohttpd.so": ({"libmicrohttpd12", "libmicrohttpd12t64"}, "libmicrohttpd-dev"),
    "libibverbs.so": ({"libibverbs1"}, "libibverbs-dev"),
}
# Libraries every base image has (libc6, libgcc-s1, libstdc++6, zlib1g) and,
# for the CUDA image, the ones the nvidia/cuda runtime image ships.
BASE_LIBS = {
    "libc.so",
    "libm.so",
    "libpthread.so",
    "libdl.so",
    "librt.so",
    "libgcc_s.so",
    "libstdc++.so",
    "libz.so",
    "ld-linux-x86-64.so",
    "ld-linux-aarch64.so",
    "linux-vdso.so",
}
CUDA_LIBS = re.compile(r"^lib(cudart|cublas|cublasLt|cuda|nvrtc|nvJitLink|cufile)\.so")
# Sanitizer runtimes of a local -DTHAW_SANITIZE build: not part of the image.
SANITIZER_LIBS = re.compile(r"^lib(asan|ubsan|tsan|lsan|hwasan)\.so")
# Optional dependencies the image always builds with (THAW_WITH_URING=ON):
# a local build without them says nothing about the image's needs.
OPTIONAL_LIBS = {"liburing.so"}
# Runtime packages that are not libraries but belong in the image.
NON_LIB_OK = {"ca-certificates", "tini", "tzdata"}
BUILD_ONLY = re.compile(
    r"(-dev$|^build-essential$|^cmake$|^gcc|^g\+\+|^clang|^make$|^git$|^pkg-config$)"
)


class Instr:
    def __init__(self, line, cmd, args):
        self.line, self.cmd, self.args = line, cmd, args

    def __repr__(self):
        return f"{self.line}: {self.cmd} {self.args}"


def parse(path):
    """Dockerfile -> list of Instr (continuations joined, comments dropped)."""
    out, buf, start = [], "", 0
    escape = "\\"
    with open(path) as f:
        lines = f.read().split("\n")
    for n, raw in enumerate(lines, 1):
        line = raw.rstrip()
        m = re.match(r"^#\s*escape\s*=\s*(\S)", line)
        if m and not out and not buf:
            escape = m.group(1)
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue  # comment inside a continuation
        if not buf:
            start = n
        if line.endswith(escape):
            buf += line[:-1] + " "
            continue
        buf += line
        parts = buf.strip().split(None, 1)
        out.append(Instr(start, parts[0].upper(), parts[1] if len(parts) > 1 else ""))
        buf = ""
    if buf:
        parts = buf.strip().split(None, 1)
        out.append(Instr(start, parts[0].upper(), parts[1] if len(parts) > 1 else ""))
    return out


def subst(s, env):
    def rep(m):
        name = m.group(1) or m.group(2)
        return env.get(name, "")

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", rep, s)


def arg_default(args):
    name, _, val = args.partition("=")
    val = val.strip()
    if len(val) >= 2 and val[0] == val[-1] and val[0] in "\"'":
        val = val[1:-1]
    return name.strip(), val


def stages_of(instrs):
    """-> (global ARGs, [{'image','name','instrs'}])"""
    gargs, stages = {}, []
    for ins in instrs:
        if ins.cmd == "FROM":
            toks = ins.args.split()
            flags = [t for t in toks if t.startswith("--")]
            rest = [t for t in toks if not t.startswith("--")]
            image = subst(rest[0], gargs) if rest else ""
            name = rest[2] if len(rest) >= 3 and rest[1].upper() == "AS" else None
            stages.append(
                {
                    "image": image,
                    "raw": rest[0] if rest else "",
                    "name": name,
                    "line": ins.line,
                    "instrs": [],
                    "flags": flags,
                }
            )
        elif not stages:
            if ins.cmd == "ARG":
                k, v = arg_default(ins.args)
                gargs[k] = v
        else:
            stages[-1]["instrs"].append(ins)
    return gargs, stages


def apt_packages(run):
    """Packages of every `apt-get install` in one RUN string."""
    pkgs = []
    for seg in re.split(r"&&|;|\|\|", run):
        toks = seg.split()
        if "apt-get" in toks and "install" in toks:
            i = toks.index("install")
            pkgs += [t for t in toks[i + 1 :] if not t.startswith("-") and "=" not in t]
    return pkgs


def deps_sh_packages():
    path = os.path.join(ROOT, "scripts", "deps.sh")
    with open(path) as f:
        text = f.read()
    m = re.search(r"pkgs=\((.*?)\)", text, re.S)
    if not m:
        return None
    body = "\n".join(l.split("#", 1)[0] for l in m.group(1).splitlines())
    return body.split()


def cmake_targets():
    targets = set()
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel = os.path.relpath(dirpath, ROOT)
        if rel != "." and (
            rel.split(os.sep)[0].startswith(("build", ".")) or rel.startswith("bench")
        ):
            dirnames[:] = []
            continue
        for fn in filenames:
            if fn == "CMakeLists.txt" or fn.endswith(".cmake"):
                with open(os.path.join(dirpath, fn)) as f:
                    for m in re.finditer(r"add_executable\(\s*([A-Za-z0-9_.+-]+)", f.read()):
                        targets.add(m.group(1))
    return targets


def needed_libs(binary):
    """DT_NEEDED sonames of an ELF (readelf), or None."""
    try:
        out = subprocess.run(
            ["readelf", "-d", binary], capture_output=True, text=True, check=True
        ).stdout
        return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)
    except (OSError, subprocess.CalledProcessError):
        pass
    try:  # ldd lists transitive libraries too: only a fallback
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
        return [l.split()[0] for l in out.splitlines() if l.strip() and "=>" in l]
    except (OSError, subprocess.CalledProcessError):
        return None


def soname_base(so):
    m = re.match(r"^(.*?\.so)(\.|$)", so)
    return m.group(1) if m else so


def lint(path):
    errs, notes = [], []
    name = os.path.relpath(path, ROOT)
    gpu = not os.path.basename(path).endswith(".cpu")
    instrs = parse(path)
    known = {
        "FROM",
        "RUN",
        "CMD",
        "LABEL",
        "EXPOSE",
        "ENV",
        "ADD",
        "COPY",
        "ENTRYPOINT",
        "VOLUME",
        "USER",
        "WORKDIR",
        "ARG",
        "ONBUILD",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "SHELL",
        "MAINTAINER",
    }
    for ins in instrs:
        if ins.cmd not in known:
            errs.append(f"line {ins.line}: unknown instruction {ins.cmd}")
        if ins.cmd == "MAINTAINER":
            errs.append(f"line {ins.line}: MAINTAINER is deprecated (use LABEL)")
        if ins.cmd == "ADD":
            errs.append(f"line {ins.line}: use COPY, not ADD")
    gargs, stages = stages_of(instrs)

    # --- stages and base images
    if len(stages) < 2:
        errs.append(f"expected a multi-stage build, found {len(stages)} stage(s)")
        return errs, notes
    names = [s["name"] for s in stages]
    if "build" not in names:
        errs.append("no stage named 'build' (FROM ... AS build)")
    if stages[-1]["name"] != "runtime":
        errs.append(f"the final stage must be 'AS runtime', is {stages[-1]['name']!r}")
    stage_names = set(n for n in names if n)
    for s in stages:
        img = s["image"]
        if img in stage_names:
            continue
        if "$" in img or not img:
            errs.append(f"line {s['line']}: base image {s['raw']!r} has an unresolved variable")
            continue
        if "@sha256:" in img:
            continue
        last = img.rsplit("/", 1)[-1]
        if ":" not in last:
            errs.append(f"line {s['line']}: base image {img!r} has no tag (pin one)")
        elif last.split(":", 1)[1] == "latest":
            errs.append(f"line {s['line']}: base image {img!r} uses :latest (pin a version)")
    build = next((s for s in stages if s["name"] == "build"), None)
    final = stages[-1]
    if build and gpu:
        b, r = build["image"], final["image"]
        mb = re.match(r"^(?:.*/)?nvidia/cuda:([0-9.]+)-(?:cudnn[0-9]*-)?devel-(.+)$", b)
        mr = re.match(r"^(?:.*/)?nvidia/cuda:([0-9.]+)-(?:cudnn[0-9]*-)?runtime-(.+)$", r)
        if not mb:
            errs.append(f"build stage: {b!r} is not an nvidia/cuda *-devel-* image")
        if not mr:
            errs.append(f"runtime stage: {r!r} is not an nvidia/cuda *-runtime-* image")
        if mb and mr and mb.groups() != mr.groups():
            errs.append(f"build {b!r} and runtime {r!r} differ in CUDA version or OS")
    elif build:
        for s in (build, final):
            if "cuda" in s["image"]:
                errs.append(f"{s['name']} stage: CPU Dockerfile uses a CUDA image {s['image']!r}")
        db = re.match(r"^(?:.*/)?debian:([0-9a-z]+)", build["image"])
        dr = re.match(r"^(?:.*/)?debian:([0-9a-z]+)", final["image"])
        if not (db and dr):
            errs.append(
                "CPU Dockerfile: build and runtime stages should be debian:<release> images"
            )
        elif db.group(1) != dr.group(1):
            errs.append(
                f"CPU Dockerfile: Debian releases differ ({build['image']} vs {final['image']})"
            )

    # --- apt hygiene, in every stage
    stage_pkgs = {}
    for s in stages:
        pk = []
        for ins in s["instrs"]:
            if ins.cmd != "RUN":
                continue
            run = ins.args
            if re.search(r"(^|[\s;&|])apt(\s|$)", run):
                errs.append(f"line {ins.line}: use apt-get, not apt, in scripts")
            if "apt-get install" in re.sub(r"\s+", " ", run) or re.search(
                r"apt-get\s+(-\S+\s+)*install", run
            ):
                i_upd = run.find("apt-get update")
                i_ins = re.search(r"apt-get\s+(-\S+\s+)*install", run).start()
                if i_upd < 0 or i_upd > i_ins:
                    errs.append(
                        f"line {ins.line}: apt-get update must come before apt-get install in the same RUN"
                    )
                elif "&&" not in run[i_upd:i_ins]:
                    errs.append(f"line {ins.line}: chain apt-get update && apt-get install")
                seg = run[i_ins:]
                if "--no-install-recommends" not in seg:
                    errs.append(f"line {ins.line}: apt-get install without --no-install-recommends")
                if not re.search(r"\s(-y|--yes|-qq?y|--assume-yes)\b", seg):
                    errs.append(f"line {ins.line}: apt-get install without -y")
                if not re.search(r"rm -rf /var/lib/apt/lists/\*?", run[i_ins:]):
                    errs.append(f"line {ins.line}: remove /var/lib/apt/lists/* in the same RUN")
                pk += apt_packages(run)
            elif "apt-get update" in run:
                errs.append(f"line {ins.line}: apt-get update without install in the same RUN")
        stage_pkgs[s["name"] or s["image"]] = pk

    # --- final stage
    fin = final["instrs"]
    users = [i for i in fin if i.cmd == "USER"]
    if not users:
        errs.append("final stage: no USER (runs as root)")
    else:
        u = users[-1].args.split(":")[0].strip()
        if u in ("root", "0", ""):
            errs.append(f"line {users[-1].line}: final USER {users[-1].args!r} is root")
        elif not u.isdigit():
            notes.append(f"USER {u!r} is not numeric: Kubernetes runAsNonRoot cannot verify it")
    exposed = set()
    for i in fin:
        if i.cmd == "EXPOSE":
            exposed |= {p.split("/")[0] for p in i.args.split()}
    if "8080" not in exposed:
        errs.append("final stage: EXPOSE 8080 missing")
    env = {}
    for i in fin:
        if i.cmd == "ENV":
            toks = shlex.split(i.args)
            if toks and "=" not in toks[0]:
                env[toks[0]] = " ".join(toks[1:])  # legacy ENV k v
                notes.append(f"line {i.line}: legacy 'ENV key value' form")
            else:
                for t in toks:
                    k, _, v = t.partition("=")
                    env[k] = v
    if env.get("PORT") != "8080":
        errs.append(f"final stage: ENV PORT=8080 expected, got {env.get('PORT')!r}")
    if not env.get("THAW_CACHE_DIR", "").startswith("/tmp/"):
        errs.append(
            f"final stage: ENV THAW_CACHE_DIR under /tmp expected, got {env.get('THAW_CACHE_DIR')!r}"
        )
    eps = [i for i in fin if i.cmd == "ENTRYPOINT"]
    if len(eps) != 1:
        errs.append(f"final stage: expected one ENTRYPOINT, found {len(eps)}")
    else:
        try:
            ep = json.loads(eps[0].args)
            if not (isinstance(ep, list) and ep and all(isinstance(x, str) for x in ep)):
                raise ValueError
            if os.path.basename(ep[0]) != ENTRY_BINARY:
                errs.append(
                    f"line {eps[0].line}: ENTRYPOINT runs {ep[0]!r}, expected {ENTRY_BINARY}"
                )
        except ValueError:
            errs.append(
                f"line {eps[0].line}: ENTRYPOINT must be in exec (JSON array) form, "
                f"so the runtime is PID 1 and gets SIGTERM"
            )
    for i in fin:
        if i.cmd == "CMD" and not i.args.strip().startswith("["):
            errs.append(f"line {i.line}: CMD in shell form")
        if i.cmd == "WORKDIR" and not i.args.strip().startswith("/"):
            errs.append(f"line {i.line}: WORKDIR must be absolute")
    runtime_pkgs = stage_pkgs.get(final["name"] or final["image"], [])
    for p in runtime_pkgs:
        if BUILD_ONLY.search(p):
            errs.append(f"runtime stage installs build-only package {p}")

    # --- COPY --from=build
    targets = cmake_targets()
    copied = []
    for i in fin:
        if i.cmd != "COPY":
            continue
        toks = i.args.split()
        src_stage = next((t.split("=", 1)[1] for t in toks if t.startswith("--from=")), None)
        paths = [t for t in toks if not t.startswith("--")]
        if src_stage is None:
            errs.append(
                f"line {i.line}: the runtime stage copies from the context ({paths}); "
                f"copy binaries from the build stage only"
            )
            continue
        if src_stage != "build":
            errs.append(f"line {i.line}: COPY --from={src_stage}: expected --from=build")
            continue
        for src in paths[:-1]:
            b = os.path.basename(src)
            if not re.search(r"(^|/)build/bin/[^/]+$", src):
                errs.append(
                    f"line {i.line}: COPY --from=build {src}: only build/bin/<binary> may be copied"
                )
            elif b not in ALLOWED_BINARIES:
                errs.append(
                    f"line {i.line}: COPY --from=build {src}: {b} is not one of {sorted(ALLOWED_BINARIES)}"
                )
            elif b not in targets:
                errs.append(f"line {i.line}: COPY --from=build {src}: no CMake add_executable({b})")
            copied.append(b)
    if ENTRY_BINARY not in copied:
        errs.append(f"final stage: {ENTRY_BINARY} is not copied from the build stage")

    # --- build stage: deps.sh and CMake
    if build:
        bpk = set(stage_pkgs.get("build", []))
        deps = deps_sh_packages()
        if deps is None:
            errs.append("scripts/deps.sh: no pkgs=( ... ) list found")
        else:
            need = [p for p in deps if p not in DEPS_TEST_ONLY]
            missing = [p for p in need if p not in bpk]
            if missing:
                errs.append(
                    f"build stage lacks what scripts/deps.sh installs for building: {missing} "
                    f"(add them, or list them as test-only in lint_dockerfile.py)"
                )
        runs = " ".join(i.args for i in build["instrs"] if i.cmd == "RUN")
        if not re.search(r"cmake\s.*-S\s", runs) or "--build" not in runs:
            errs.append("build stage: no `cmake -S . -B build` and `cmake --build`")
        if "-DCMAKE_BUILD_TYPE=Release" not in runs:
            errs.append("build stage: CMake build is not -DCMAKE_BUILD_TYPE=Release")
        want = "-DTHAW_WITH_CUDA=ON" if gpu else "-DTHAW_WITH_CUDA=OFF"
        if want not in runs:
            errs.append(f"build stage: expected {want}")
        # -dev packages of the build stage <-> runtime library packages
        rset = set(runtime_pkgs)
        for base, (rt, dev) in LIBS.items():
            if dev in bpk and not (rt & rset):
                errs.append(
                    f"runtime stage: {dev} is built against but no runtime package "
                    f"({' or '.join(sorted(rt))}) is installed"
                )
        lib_pkgs = {p for rt, _ in LIBS.values() for p in rt}
        for p in rset:
            if p in NON_LIB_OK:
                continue
            if p not in lib_pkgs:
                errs.append(
                    f"runtime stage: package {p} is neither a library the binaries link nor allowed"
                )
                continue
            dev = next(d for rt, d in LIBS.values() if p in rt)
            if dev not in bpk:
                errs.append(f"runtime stage: {p} installed but {dev} is not in the build stage")

        # --- DT_NEEDED of the built binaries, when they exist here
        have = {b: os.path.join(BIN, b) for b in copied if os.path.isfile(os.path.join(BIN, b))}
        absent = sorted(set(copied) - set(have))
        needed = set()
        for b, p in sorted(have.items()):
            libs = needed_libs(p)
            if libs is None:
                notes.append(
                    f"{b}: cannot read its DT_NEEDED (no readelf/ldd); library check skipped"
                )
                continue
            for so in libs:
                base = soname_base(so)
                if base in BASE_LIBS:
                    continue
                if SANITIZER_LIBS.match(so):
                    notes.append(f"{b} here is a sanitizer build ({so}); ignored")
                    continue
                if CUDA_LIBS.match(so):
                    if not gpu:
                        notes.append(
                            f"{b} here links {so} (a CUDA build); the CPU image builds "
                            f"with THAW_WITH_CUDA=OFF"
                        )
                    continue
                needed.add(base)
                if base not in LIBS:
                    errs.append(f"{b} links {so}, which lint_dockerfile.py cannot map to a package")
                elif not (LIBS[base][0] & rset):
                    errs.append(
                        f"{b} links {so}: runtime stage needs {' or '.join(sorted(LIBS[base][0]))}"
                    )
        if have and not absent:
            for p in sorted(rset - NON_LIB_OK):
                base = next((k for k, (rt, _) in LIBS.items() if p in rt), None)
                if base and base not in needed:
                    if base in OPTIONAL_LIBS:
                        notes.append(
                            f"{p}: the binaries here were built without {base} (optional); "
                            f"the image builds with it"
                        )
                    else:
                        errs.append(f"runtime stage installs {p}, but no binary links {base}")
        if absent:
            notes.append(
                f"not built here ({', '.join(os.path.join(BIN, a) for a in absent)}): "
                f"checked {'only ' + ', '.join(sorted(have)) if have else 'no binary'} "
                f"against the runtime packages; unneeded packages not checked"
            )
    return errs, notes


# Negative examples: each edits docker/Dockerfile and must be flagged with
# an error containing the given text.
RT_FROM = "FROM nvidia/cuda:${CUDA_VERSION}-runtime-${UBUNTU} AS runtime"
NEGATIVE = [
    (
        ":latest base image",
        ":latest",
        lambda t: t.replace(RT_FROM, "FROM nvidia/cuda:latest AS runtime"),
    ),
    ("untagged base image", "has no tag", lambda t: t.replace(RT_FROM, "FROM ubuntu AS runtime")),
    (
        "runtime stage on a devel image",
        "*-runtime-* image",
        lambda t: t.replace(RT_FROM, RT_FROM.replace("-runtime-", "-devel-")),
    ),
    ("single stage", "multi-stage", lambda t: t[: t.index(RT_FROM)]),
    (
        "final stage not named runtime",
        "'AS runtime'",
        lambda t: t.replace(RT_FROM, RT_FROM[: -len(" AS runtime")]),
    ),
    ("no USER", "no USER", lambda t: t.replace("USER 10001:10001\n", "")),
    ("USER root", "is root", lambda t: t.replace("USER 10001:10001", "USER root")),
    (
        "no --no-install-recommends",
        "--no-install-recommends",
        lambda t: t.replace(
            "install -y --no-install-recommends \\\n      ca-certificates",
            "install -y \\\n      ca-certificates",
        ),
    ),
    (
        "apt lists left behind",
        "/var/lib/apt/lists",
        lambda t: t.replace(" \\\n && rm -rf /var/lib/apt/lists/*", "", 1),
    ),
    (
        "apt-get update in its own RUN",
        "apt-get update without install",
        lambda t: t.replace(
            "RUN apt-get update \\\n && DEBIAN", "RUN apt-get update\nRUN DEBIAN", 1
        ),
    ),
    (
        "apt instead of apt-get",
        "use apt-get",
        lambda t: t.replace(
            "apt-get install -y --no-install-recommends \\\n      build-essential",
            "apt install -y --no-install-recommends \\\n      build-essential",
        ),
    ),
    (
        "shell-form ENTRYPOINT",
        "exec (JSON array) form",
        lambda t: t.replace(
            'ENTRYPOINT ["/usr/local/bin/thaw-runtime"]', "ENTRYPOINT /usr/local/bin/thaw-runtime"
        ),
    ),
    (
        "ENTRYPOINT not thaw-runtime",
        "expected thaw-runtime",
        lambda t: t.replace(
            'ENTRYPOINT ["/usr/local/bin/thaw-runtime"]', 'ENTRYPOINT ["/usr/local/bin/thaw"]'
        ),
    ),
    ("EXPOSE another port", "EXPOSE 8080", lambda t: t.replace("EXPOSE 8080", "EXPOSE 9000")),
    ("PORT not 8080", "PORT=8080", lambda t: t.replace("ENV PORT=8080", "ENV PORT=9000")),
    (
        "cache outside /tmp",
        "THAW_CACHE_DIR under /tmp",
        lambda t: t.replace("THAW_CACHE_DIR=/tmp/thaw-cache", "THAW_CACHE_DIR=/var/cache/thaw"),
    ),
    (
        "copying a binary that is not shipped",
        "is not one of",
        lambda t: t.replace(
            "/src/build/bin/thaw /usr/local/bin/",
            "/src/build/bin/thaw /src/build/bin/thaw-scheduler /usr/local/bin/",
        ),
    ),
    (
        "copying sources into the runtime stage",
        "copy binaries from the build stage only",
        lambda t: t.replace("USER 10001:10001", "COPY runtime /opt/runtime\nUSER 10001:10001"),
    ),
    ("ADD", "use COPY", lambda t: t.replace("COPY . .", "ADD . .")),
    ("a linked library without its package", "libzip", lambda t: t.replace(" libzip4t64", "")),
    (
        "a package no binary needs",
        "libibverbs1",
        lambda t: t.replace("libpq5 libmicrohttpd12t64", "libpq5 libmicrohttpd12t64 libibverbs1"),
    ),
    (
        "build tools in the runtime stage",
        "build-only package",
        lambda t: t.replace(
            "      ca-certificates \\\n", "      ca-certificates build-essential \\\n"
        ),
    ),
    (
        "build stage missing a deps.sh package",
        "scripts/deps.sh installs for building",
        lambda t: t.replace("libpq-dev libmicrohttpd-dev", "libpq-dev"),
    ),
    (
        "no Release build",
        "Release",
        lambda t: t.replace("-DCMAKE_BUILD_TYPE=Release", "-DCMAKE_BUILD_TYPE=Debug"),
    ),
    (
        "CUDA off in the GPU image",
        "-DTHAW_WITH_CUDA=ON",
        lambda t: t.replace("-DTHAW_WITH_CUDA=ON", "-DTHAW_WITH_CUDA=OFF"),
    ),
]


def self_test():
    """The linter must flag each negative example of docker/Dockerfile."""
    import tempfile

    src = os.path.join(ROOT, "docker", "Dockerfile")
    with open(src) as f:
        text = f.read()
    fails = 0
    with tempfile.TemporaryDirectory() as tmp:
        bad = os.path.join(tmp, "Dockerfile")
        for desc, expect, edit in NEGATIVE:
            t = edit(text)
            if t == text:
                print(
                    f"FAIL negative example {desc!r}: the edit did not apply (Dockerfile changed?)"
                )
                fails += 1
                continue
            with open(bad, "w") as f:
                f.write(t)
            errs, _ = lint(bad)
            hit = [e for e in errs if expect in e]
            if hit:
                print(f"ok   rejects {desc}: {hit[0]}")
            else:
                print(f"FAIL accepts {desc}: expected an error containing {expect!r}, got {errs}")
                fails += 1
    return len(NEGATIVE), fails


def main(argv):
    explicit = bool(argv)
    files = argv or [os.path.join(ROOT, "docker", f) for f in ("Dockerfile", "Dockerfile.cpu")]
    if not explicit:
        files = [f for f in files if os.path.isfile(f)]
    if not files:
        print("SKIP: no Dockerfile in docker/")
        return 77
    total = failed = 0
    for f in files:
        total += 1
        if not os.path.isfile(f):
            print(f"FAIL {f}: not found")
            failed += 1
            continue
        errs, notes = lint(f)
        rel = os.path.relpath(f, ROOT)
        for n in dict.fromkeys(notes):
            print(f"note {rel}: {n}")
        if errs:
            failed += 1
            for e in errs:
                print(f"FAIL {rel}: {e}")
        else:
            print(f"ok   {rel}")
    if not explicit and os.path.isfile(os.path.join(ROOT, "docker", "Dockerfile")):
        n, nf = self_test()
        total += n
        failed += nf
    print(f"{total - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
