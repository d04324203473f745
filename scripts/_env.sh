# Sourced by scripts/setup.sh, run.sh and test.sh (from the repository root): which Python the
# project is installed into and runs with. `raysam_python` sets PYTHON to
#   - the active environment's python: $VIRTUAL_ENV (venv, virtualenv, uv), a python3 that runs in
#     a virtual environment, or a conda environment other than base; else
#   - .venv/bin/python in the repository, creating .venv first (a system Python such as Debian's or
#     Ubuntu's refuses pip installs, PEP 668), with apt's python3.X-venv where venv lacks it; .venv
#     is then activated for this shell (.venv/bin first on PATH, VIRTUAL_ENV set).
# Python >= 3.11 is required: python3, else the newest python3.1x on PATH (Ubuntu 22.04's python3
# is 3.10, deadsnakes' python3.11 sits beside it); otherwise it says how to get one and fails.

_RAYSAM_PROBE='import sys, importlib.util as u; print("%d.%d" % sys.version_info[:2],
int(sys.prefix != sys.base_prefix), int(u.find_spec("pip") is not None))'

# Prints "X.Y IN_VENV HAS_PIP" for the interpreter $1; fails when it does not run.
_raysam_probe() {
    "$1" -c "$_RAYSAM_PROBE" 2>/dev/null
}

_raysam_new_enough() {  # X.Y
    local major=${1%%.*} minor=${1#*.}
    [ "$major" -gt 3 ] || { [ "$major" -eq 3 ] && [ "$minor" -ge 11 ]; }
}

_raysam_too_old() {  # what was found
    cat >&2 <<EOF
napari-raysam needs Python 3.11 or newer; found $1.
Install one, then run this again (it looks for python3, python3.11 ... python3.14 on PATH, or uses
the active virtual environment):
  Ubuntu 22.04:  sudo add-apt-repository -y ppa:deadsnakes/ppa
                 sudo apt-get install -y python3.11 python3.11-venv
  Debian 12, Ubuntu 24.04 or newer: sudo apt-get install -y python3 python3-venv
  any Linux or macOS: uv python install 3.11 (https://docs.astral.sh/uv/), or
                 pyenv install 3.11 && pyenv global 3.11
EOF
}

_raysam_activate() {  # the virtual environment's directory
    export VIRTUAL_ENV="$1"
    export PATH="$1/bin:$PATH"
    unset PYTHONHOME
    PYTHON="$1/bin/python"
}

# Creates the virtual environment $3 with the interpreter $1 (Python $2), with pip in it.
_raysam_make_venv() {
    local base=$1 version=$2 dir=$3 out pkg sudo=""
    echo "Creating the virtual environment $dir with $(command -v "$base") (Python $version)" \
         "(no virtual environment is active)" >&2
    if out=$("$base" -m venv --clear "$dir" 2>&1) && _raysam_has_pip "$dir/bin/python"; then
        return 0
    fi
    case "$out" in
        *ensurepip*|*"No module named venv"*)
            if command -v apt-get >/dev/null 2>&1; then
                # Debian/Ubuntu split venv (and ensurepip's wheels) out of the interpreter's package.
                pkg="python$version-venv"
                [ "$(id -u)" -ne 0 ] && sudo=sudo
                echo "Python's venv module is missing: installing $pkg with apt-get" >&2
                $sudo apt-get update -qq
                DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$pkg" || {
                    echo "Could not install $pkg; install it (or python3-venv) yourself" >&2
                    return 1
                }
                if out=$("$base" -m venv --clear "$dir" 2>&1) \
                        && _raysam_has_pip "$dir/bin/python"; then
                    return 0
                fi
            fi
            ;;
    esac
    printf '%s\n' "$out" >&2
    echo "Could not create the virtual environment $dir with $base." \
         "Create and activate one yourself (Python >= 3.11, with pip), then run this again." >&2
    return 1
}

_raysam_has_pip() {  # interpreter
    local line
    line=$(_raysam_probe "$1") || return 1
    [ "${line##* }" = 1 ]
}

raysam_python() {
    local active="" line version in_venv has_pip cand found="" base="" venv="$PWD/.venv"
    PYTHON=""
    # 1. An environment the user chose.
    if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
        active="$VIRTUAL_ENV/bin/python"
    elif [ -n "${CONDA_PREFIX:-}" ] && [ "${CONDA_DEFAULT_ENV:-base}" != base ] \
            && [ -x "$CONDA_PREFIX/bin/python" ]; then
        active="$CONDA_PREFIX/bin/python"
    elif line=$(_raysam_probe python3) && read -r version in_venv has_pip <<<"$line" \
            && [ "$in_venv" = 1 ]; then
        active=$(command -v python3)
    fi
    if [ -n "$active" ]; then
        line=$(_raysam_probe "$active") || { echo "$active does not run" >&2; return 1; }
        read -r version in_venv has_pip <<<"$line"
        if ! _raysam_new_enough "$version"; then
            _raysam_too_old "Python $version in the active environment ($active)"
            return 1
        fi
        if [ "$has_pip" != 1 ]; then  # e.g. made by `uv venv`
            "$active" -m ensurepip --upgrade >&2 || {
                echo "The active environment ($active) has no pip and ensurepip failed" >&2
                return 1
            }
        fi
        PYTHON="$active"
        return 0
    fi
    # 2. No environment active: the repository's .venv, created when missing or broken.
    if line=$(_raysam_probe "$venv/bin/python") && read -r version in_venv has_pip <<<"$line" \
            && _raysam_new_enough "$version" && [ "$has_pip" = 1 ]; then
        _raysam_activate "$venv"
        return 0
    fi
    for cand in python3 python3.14 python3.13 python3.12 python3.11; do
        command -v "$cand" >/dev/null 2>&1 || continue
        line=$(_raysam_probe "$cand") || continue
        read -r version in_venv has_pip <<<"$line"
        if _raysam_new_enough "$version"; then
            base=$cand
            break
        fi
        [ -n "$found" ] || found="Python $version ($(command -v "$cand"))"
    done
    if [ -z "$base" ]; then
        _raysam_too_old "${found:-no python3 on PATH}"
        return 1
    fi
    _raysam_make_venv "$base" "$version" "$venv" || return 1
    _raysam_activate "$venv"
}
