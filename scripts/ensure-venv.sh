# Sourced by scripts/serve and scripts/test: create .venv and install the project when needed.
# Needs only Python >= 3.11 (set PYTHON to choose the interpreter).
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "OCTI needs Python 3.11 or newer; set PYTHON=/path/to/python3.11+" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "Creating .venv with $("$PYTHON" --version)…" >&2
    "$PYTHON" -m venv .venv
fi
# Reinstall only when the dependencies changed since the last install.
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
    echo "Installing OCTI and its dependencies into .venv…" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
    touch .venv/.installed
fi
