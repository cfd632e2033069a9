# shellcheck shell=bash
# Shared by scripts/test and scripts/serve (sourced, not executed). Expects the repo root as cwd.
#
#   ensure_venv [dev]   create .venv with python3 (or $PYTHON) if missing, and `pip install -e .`
#                       (with the dev extra when asked) only when pyproject.toml changed since the
#                       last install; the stamp is .venv/.secauto-install-stamp.
#   ensure_redis_server install redis-server with apt-get when it is not on PATH.
#   ensure_promtool     put Prometheus' promtool (from Debian's prometheus package) in .venv/bin when
#                       no promtool is on PATH; the tests check the alert rules with it.
#   ensure_chromium     install chromium and chromium-driver (the dashboard's browser tests) likewise.
#   stage NAME          print a stage banner.

stage() {
    printf '\n==> %s\n' "$*" >&2
}

_pyproject_hash() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum pyproject.toml | cut -d' ' -f1
    else
        .venv/bin/python -c 'import hashlib,sys; print(hashlib.sha256(open("pyproject.toml","rb").read()).hexdigest())'
    fi
}

ensure_venv() {
    local extras="${1:-}"
    local python="${PYTHON:-python3}"
    local stamp=.venv/.secauto-install-stamp

    if [ ! -x .venv/bin/python ]; then
        if ! command -v "$python" >/dev/null 2>&1; then
            echo "error: $python not found; install Python >= 3.11 or set PYTHON=/path/to/python3.11" >&2
            return 1
        fi
        if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            echo "error: $python is $("$python" -V 2>&1); SecAuto needs Python >= 3.11 (set PYTHON=...)" >&2
            return 1
        fi
        echo "creating .venv with $python" >&2
        "$python" -m venv .venv
    fi
    if ! .venv/bin/python -c '' 2>/dev/null; then
        echo "error: .venv/bin/python does not run (moved or broken venv?); remove .venv and retry" >&2
        return 1
    fi

    local hash want have=""
    hash="$(_pyproject_hash)"
    want="$hash ${extras:-base}"
    [ -f "$stamp" ] && have="$(cat "$stamp")"
    # A dev install also satisfies a plain one, so scripts/serve does not undo scripts/test's install.
    if [ "$have" = "$want" ] || { [ -z "$extras" ] && [ "$have" = "$hash dev" ]; }; then
        if [ -x .venv/bin/secauto ]; then
            return 0
        fi
    fi

    local target='.'
    [ -n "$extras" ] && target=".[$extras]"
    echo "installing $target into .venv (pyproject.toml changed or first install)" >&2
    rm -f "$stamp"
    .venv/bin/python -m pip install -q -e "$target"
    echo "$want" >"$stamp"
}

# _apt_install COMMAND PACKAGE...: install PACKAGEs with apt-get unless COMMAND is already on PATH.
_apt_install() {
    local command="$1"
    shift
    if command -v "$command" >/dev/null 2>&1; then
        echo "$command: $(command -v "$command")" >&2
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: $command is not on PATH and apt-get is unavailable; install $*" >&2
        return 1
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            echo "error: $command is not on PATH; not root and no sudo to apt-get install $*" >&2
            return 1
        fi
    fi
    echo "installing $* with apt-get" >&2
    ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update
    ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
    command -v "$command" >/dev/null 2>&1 || {
        echo "error: $command still not on PATH after apt-get install $*" >&2
        return 1
    }
}

# promtool alone, not `apt-get install prometheus`: that package also pulls a dozen web-UI packages,
# creates a user and, where systemd runs, starts a Prometheus server. promtool is a static binary; it
# is taken out of the downloaded package into .venv/bin (a new .venv takes it again).
ensure_promtool() {
    if command -v promtool >/dev/null 2>&1; then
        echo "promtool: $(command -v promtool)" >&2
        return 0
    fi
    if [ -x .venv/bin/promtool ]; then
        echo "promtool: .venv/bin/promtool" >&2
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
        echo "error: promtool is not on PATH and apt-get/dpkg-deb are unavailable; install Prometheus' promtool (>= 2.37)" >&2
        return 1
    fi
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get) sudo=()
    if [ "$(id -u)" -eq 0 ]; then
        apt+=(-o APT::Sandbox::User=root)  # root downloads into a folder the _apt user cannot write
    elif command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    fi
    if ! apt-cache show prometheus >/dev/null 2>&1; then
        if [ "$(id -u)" -ne 0 ] && [ ${#sudo[@]} -eq 0 ]; then
            echo "error: no promtool, and the package lists lack prometheus; not root and no sudo to apt-get update" >&2
            return 1
        fi
        echo "apt-get update (for the prometheus package)" >&2
        ${sudo[@]+"${sudo[@]}"} "${apt[@]}" update
    fi
    local tmp
    tmp="$(mktemp -d)"
    echo "downloading Debian's prometheus package for its promtool" >&2
    if ! (cd "$tmp" && "${apt[@]}" download prometheus >&2); then
        rm -rf "$tmp"
        echo "error: apt-get download prometheus failed" >&2
        return 1
    fi
    dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -x -O ./usr/bin/promtool >.venv/bin/promtool.part
    rm -rf "$tmp"
    chmod 0755 .venv/bin/promtool.part
    mv .venv/bin/promtool.part .venv/bin/promtool
    .venv/bin/promtool --version >&2 || {
        rm -f .venv/bin/promtool
        echo "error: the extracted promtool does not run" >&2
        return 1
    }
}

ensure_redis_server() {
    _apt_install redis-server redis-server
}

ensure_chromium() {
    _apt_install chromium chromium chromium-driver
    _apt_install chromedriver chromium-driver
}
