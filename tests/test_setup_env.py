"""scripts/setup.sh, run.sh and test.sh on a Python that refuses system installs (PEP 668).

The scripts run for real (bash, in a copy of scripts/) but against fakes on a PATH holding no
real Python: a system ``python3`` that answers scripts/_env.sh's probe ("X.Y IN_VENV HAS_PIP")
and refuses ``pip install`` with pip's externally-managed-environment error, as Debian 12's and
Ubuntu 24.04's do; ``-m venv DIR`` makes DIR/bin/python, a fake that is in a venv and logs what
it is asked to do (pip install, pytest, the demo) without doing it. dpkg says every system
package is there; apt-get and sudo only log. Nothing is downloaded or installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SYSTEM_PYTHON = r"""#!/bin/sh
# A system Python with the PEP 668 marker (EXTERNALLY-MANAGED), like Debian 12's /usr/bin/python3.
echo "system $*" >> "$FAKE_LOG"
case "$1" in
  -c) echo "${FAKE_VERSION:-3.11} 0 1"; exit 0 ;;  # version, not in a venv, has pip
  -m) ;;
  *) exit 0 ;;
esac
case "$2" in
  pip)
    if [ "$3" = install ]; then
      cat >&2 <<'EOF'
error: externally-managed-environment

x This environment is externally managed
`-> To install Python packages system-wide, try apt install
    python3-xyz, where xyz is the package you are trying to
    install.
EOF
      exit 1
    fi
    exit 0 ;;
  venv)
    for dir; do :; done  # the last argument
    mkdir -p "$dir/bin"
    echo "home = /usr/bin" > "$dir/pyvenv.cfg"
    has_pip=1
    if [ -n "$FAKE_NO_VENV" ] && [ ! -e "$FAKE_STATE/python3-venv-installed" ]; then
      has_pip=0  # Debian without python3-venv: the venv is made, ensurepip fails
    fi
    sed "s/HAS_PIP/$has_pip/" "$FAKE_STATE/venv_python" > "$dir/bin/python"
    chmod +x "$dir/bin/python"
    ln -sf python "$dir/bin/python3"
    if [ "$has_pip" = 0 ]; then
      cat >&2 <<EOF
The virtual environment was not created successfully because ensurepip is not
available.  On Debian/Ubuntu systems, you need to install the python3-venv
package using the following command.

    apt install python${FAKE_VERSION:-3.11}-venv
EOF
      exit 1
    fi
    exit 0 ;;
esac
exit 0
"""

VENV_PYTHON = r"""#!/bin/sh
# A virtual environment's python: logs what it is asked to do.
echo "venv $0 $*" >> "$FAKE_LOG"
case "$1" in -c) echo "${FAKE_VERSION:-3.11} 1 HAS_PIP" ;; esac
exit 0
"""

LOGGER = r"""#!/bin/sh
echo "NAME $*" >> "$FAKE_LOG"
"""

# What the scripts may run besides the fakes (bash builtins aside).
TOOLS = ["bash", "sh", "dirname", "id", "cat", "mkdir", "chmod", "ln", "sed", "rm"]


@pytest.fixture
def sandbox(tmp_path):
    """A copy of scripts/, fakes first on a PATH without any real Python, and a way to run."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "scripts", repo / "scripts")
    state = tmp_path / "state"
    state.mkdir()
    (state / "venv_python").write_text(VENV_PYTHON)
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} is not installed")
        (bin_ / tool).symlink_to(found)
    fakes = {
        "python3": SYSTEM_PYTHON,
        "dpkg": "#!/bin/sh\nexit 0\n",  # every system package is installed
        "apt-get": LOGGER.replace("NAME", "apt-get") + '[ "$1" = install ] && '
                   ': > "$FAKE_STATE/python3-venv-installed"\nexit 0\n',
        "sudo": LOGGER.replace("NAME", "sudo") + 'exec "$@"\n',
    }
    for name, text in fakes.items():
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    log = tmp_path / "log"
    log.touch()

    def run(script, *args, **env_extra):
        env = {"PATH": str(bin_), "HOME": str(tmp_path), "FAKE_LOG": str(log),
               "FAKE_STATE": str(state), **env_extra}  # no VIRTUAL_ENV, CONDA_PREFIX, PIP_*
        proc = subprocess.run(["bash", str(repo / "scripts" / script), *args], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        return proc, log.read_text().splitlines()

    run.repo = repo
    run.bin = bin_
    return run


def pip_installs(calls):
    """The environment's installs (not the golden test's upstream copy in .upstream/)."""
    return [c for c in calls if " -m pip install" in c and "--target .upstream" not in c]


def upstream_installs(calls):
    return [c for c in calls if " -m pip install" in c and "--target .upstream" in c]


def test_pep668_python_gets_a_venv_and_setup_installs_into_it(sandbox):
    proc, calls = sandbox("setup.sh")
    assert proc.returncode == 0, proc.stderr
    venv_python = f"{sandbox.repo}/.venv/bin/python"
    assert f"system -m venv --clear {sandbox.repo}/.venv" in calls
    assert not [c for c in calls if c.startswith("system -m pip")]  # the refused install
    (install,) = pip_installs(calls)
    assert install.startswith(f"venv {venv_python} -m pip install")
    words = install.split()
    assert {"torch==2.14.1", "torchvision==0.29.1", "-e", ".[test]"} <= set(words)
    assert "-q" not in words and "--quiet" not in words  # pip's progress shows
    (upstream,) = upstream_installs(calls)  # MobileSAM beside, never into, the environment
    assert upstream.startswith(f"venv {venv_python} -m pip install --no-deps")
    assert "Creating the virtual environment" in proc.stderr
    assert not [c for c in calls if c.startswith(("apt-get", "sudo"))]


def test_run_and_test_scripts_use_the_venv_setup_made(sandbox):
    proc, calls = sandbox("run.sh", "--small")
    assert proc.returncode == 0, proc.stderr
    venv_python = f"{sandbox.repo}/.venv/bin/python"
    assert calls[-1] == f"venv {venv_python} -m napari_raysam.cli demo --small"
    assert len([c for c in calls if " -m venv" in c]) == 1  # created once, then reused

    proc, calls = sandbox("test.sh", "-x")
    assert proc.returncode == 0, proc.stderr
    ran = [c.split(" ", 2)[2] for c in calls if c.startswith(f"venv {venv_python} -m")]
    assert ran[-3:] == ["-m ruff check src tests", "-m npe2 validate napari-raysam",
                        "-m pytest -q -x"]
    assert len([c for c in calls if " -m venv" in c]) == 1
    assert not [c for c in calls if c.startswith("system -m") and " -m venv" not in c]


def test_missing_venv_module_is_installed_from_apt(sandbox):
    proc, calls = sandbox("setup.sh", FAKE_NO_VENV="1")
    assert proc.returncode == 0, proc.stderr
    assert "installing python3.11-venv with apt-get" in proc.stderr
    apt = [c.removeprefix("sudo ") for c in calls if c.startswith(("apt-get", "sudo"))]
    assert "apt-get install -y -qq python3.11-venv" in apt
    assert len([c for c in calls if " -m venv" in c]) == 2  # failed, then made again
    (install,) = pip_installs(calls)
    assert install.startswith(f"venv {sandbox.repo}/.venv/bin/python -m pip install")


def test_python_older_than_3_11_stops_with_how_to_get_one(sandbox):
    proc, calls = sandbox("run.sh", FAKE_VERSION="3.10")
    assert proc.returncode != 0
    assert "needs Python 3.11 or newer; found Python 3.10" in proc.stderr
    assert "deadsnakes" in proc.stderr and "uv python install 3.11" in proc.stderr
    assert not [c for c in calls if " -m " in c]  # no venv, no pip, no demo
    assert not (sandbox.repo / ".venv").exists()


def test_a_newer_python3_x_beside_an_old_python3_is_used(sandbox):
    # Ubuntu 22.04 with deadsnakes: python3 is 3.10, python3.11 is there too.
    (sandbox.bin / "python3.11").write_text(SYSTEM_PYTHON.replace("${FAKE_VERSION:-3.11}", "3.11")
                                            .replace('echo "system ', 'echo "system3.11 '))
    (sandbox.bin / "python3.11").chmod(0o755)
    proc, calls = sandbox("setup.sh", FAKE_VERSION="3.10")
    assert proc.returncode == 0, proc.stderr
    assert f"system3.11 -m venv --clear {sandbox.repo}/.venv" in calls
    (install,) = pip_installs(calls)
    assert install.startswith(f"venv {sandbox.repo}/.venv/bin/python -m pip install")


def test_an_active_virtual_environment_is_used_as_it_is(sandbox, tmp_path):
    mine = tmp_path / "mine"
    (mine / "bin").mkdir(parents=True)
    (mine / "bin" / "python").write_text(VENV_PYTHON.replace("HAS_PIP", "1"))
    (mine / "bin" / "python").chmod(0o755)
    proc, calls = sandbox("setup.sh", VIRTUAL_ENV=str(mine))
    assert proc.returncode == 0, proc.stderr
    (install,) = pip_installs(calls)
    assert install.startswith(f"venv {mine}/bin/python -m pip install")
    assert not (sandbox.repo / ".venv").exists()
    assert not [c for c in calls if c.startswith("system -m")]


def _debian_pep668_python():
    python = Path("/usr/bin/python3")
    if not python.exists():
        return None
    code = ("import sysconfig, os, venv, ensurepip; "
            "print(os.path.exists(os.path.join(sysconfig.get_path('stdlib'), "
            "'EXTERNALLY-MANAGED')))")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return python if out.stdout.strip() == "True" else None


@pytest.mark.skipif(_debian_pep668_python() is None,
                    reason="no /usr/bin/python3 with a PEP 668 marker and venv")
def test_a_real_pep668_system_python_gets_a_real_venv(tmp_path):
    """The environment logic alone (no pip install) against the real /usr/bin/python3."""
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    blocked = tmp_path / "blocked"  # never apt-get for real here
    blocked.mkdir()
    for name in ("apt-get", "sudo"):
        (blocked / name).write_text("#!/bin/sh\necho blocked >&2\nexit 1\n")
        (blocked / name).chmod(0o755)
    env = {"PATH": f"{blocked}:/usr/bin:/bin", "HOME": str(tmp_path)}
    script = '. scripts/_env.sh; raysam_python; echo "$PYTHON"; "$PYTHON" -m pip --version'
    proc = subprocess.run(["bash", "-euc", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    python = proc.stdout.splitlines()[0]
    assert python == f"{tmp_path}/.venv/bin/python"
    assert f"{tmp_path}/.venv/lib/" in proc.stdout  # pip runs from inside the venv
    assert (tmp_path / ".venv" / "pyvenv.cfg").exists()


def test_gitignore_keeps_the_venv_out():
    assert ".venv/" in (ROOT / ".gitignore").read_text().splitlines()

