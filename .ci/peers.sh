#!/usr/bin/env bash
# Install the real test peers used by tests/peers.py (idempotent).
#
#   .peers/localstripe-venv/   localstripe (fake stateful Stripe API) in its own venv
#   .peers/node_modules/       @stoplight/prism-cli + @twilio-alpha/mcp (Twilio OpenAPI spec)
#
# Needs: python3 (with venv), node >= 18.20 and npm. Reaches PyPI and the npm registry only.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PEERS=.peers
mkdir -p "$PEERS"

PYTHON="${PYTHON:-python3}"

# --- localstripe ------------------------------------------------------------
# localstripe's own deps are loose (aiohttp>=2.3.2, python-dateutil>=2.6.1); it
# lives in its own venv so it never constrains the project's environment.
LS_VERSION=1.15.10
LS_REQS="localstripe==${LS_VERSION} aiohttp==3.14.5 python-dateutil==2.9.0.post0"
LS_VENV="$PEERS/localstripe-venv"
if ! "$LS_VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('localstripe') != '${LS_VERSION}')" 2>/dev/null; then
    rm -rf "$LS_VENV"
    if ! "$PYTHON" -m venv "$LS_VENV"; then  # Debian's own python3 needs python3-venv
        rm -rf "$LS_VENV"
        apt-get update -qq && apt-get install -y -qq python3-venv
        "$PYTHON" -m venv "$LS_VENV"
    fi
    "$LS_VENV/bin/python" -m pip install --quiet --disable-pip-version-check $LS_REQS
fi

# --- Prism + Twilio OpenAPI spec ---------------------------------------------
command -v node >/dev/null && command -v npm >/dev/null \
    || { echo "peers.sh: node >= 18.20 and npm are required" >&2; exit 1; }
# prism-cli >= 5.15 (and the 5.15+/5.16 prism-core/http/http-server it pulls
# through caret ranges) declare node >= 24; pin the last node-18/20 line.
cat > "$PEERS/package.json.new" <<'JSON'
{
  "name": "payherald-test-peers",
  "private": true,
  "dependencies": {
    "@stoplight/prism-cli": "5.14.2",
    "@twilio-alpha/mcp": "0.7.0"
  },
  "overrides": {
    "@stoplight/prism-core": "5.8.0",
    "@stoplight/prism-http": "5.12.0",
    "@stoplight/prism-http-server": "5.12.2"
  }
}
JSON
if cmp -s "$PEERS/package.json.new" "$PEERS/package.json"; then
    rm "$PEERS/package.json.new"
else
    mv "$PEERS/package.json.new" "$PEERS/package.json"
fi
SPEC="$PEERS/node_modules/@twilio-alpha/mcp/twilio-oai/spec/json/twilio_api_v2010.json"
if [ ! -x "$PEERS/node_modules/.bin/prism" ] || [ ! -f "$SPEC" ] \
    || [ "$PEERS/package.json" -nt "$PEERS/node_modules/.package-lock.json" ]; then
    SCARF_ANALYTICS=false npm install --prefix "$PEERS" --ignore-scripts \
        --no-audit --no-fund --loglevel=error
fi

"$LS_VENV/bin/python" -c "import localstripe.server" >/dev/null
test -f "$SPEC"
echo "peers ready: localstripe ${LS_VERSION} ($LS_VENV), prism $("$PEERS/node_modules/.bin/prism" --version | tr -d '\n')"
