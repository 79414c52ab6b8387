#!/usr/bin/env bash
# Checks the deployment files without a cluster or a Docker engine:
#   - helm lint --strict and helm template of helm/cfstream with each helm/cfstream/ci/*.yaml
#   - the chart refuses values that could only fail at run time
#   - the PrometheusRule each value set renders, with `promtool check rules` (Debian package
#     prometheus; PROMTOOL overrides)
#   - docker-compose.yml against the Compose specification's JSON schema (as vendored by
#     check-jsonschema, a PyPI package)
# Then the pytest checks in tests/deploy/ look inside the rendered manifests.
#
#   bash scripts/install-helm.sh && bash scripts/check-deploy.sh
# HELM and PYTHON override the tools; the defaults are the cached helm and .venv's Python.
set -euo pipefail
cd "$(dirname "$0")/.."

CHART=helm/cfstream
HELM="${HELM:-${CFSTREAM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cfstream}/bin/helm}"
if [[ ! -x "$HELM" ]]; then
    HELM="$(command -v helm || true)"
fi
[[ -n "$HELM" && -x "$HELM" ]] || {
    echo "check-deploy: no helm binary; run: bash scripts/install-helm.sh" >&2; exit 1; }
PYTHON="${PYTHON:-.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3

failures=0
step() { printf '== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; failures=$((failures + 1)); }

step "helm $("$HELM" version --short)"
for values in "$CHART"/ci/*.yaml; do
    step "helm lint + template -f $values"
    "$HELM" lint --strict "$CHART" -f "$values" >/dev/null || fail "helm lint -f $values"
    "$HELM" template ci "$CHART" -f "$values" >/dev/null || fail "helm template -f $values"
done

step "helm template refuses bad values"
refuses() {
    local why="$1"; shift
    if "$HELM" template ci "$CHART" "$@" >/dev/null 2>&1; then fail "accepted: $why ($*)"; fi
}
refuses "SASL without a password" --set kafka.securityProtocol=SASL_SSL --set kafka.sasl.username=u
refuses "SASL without a username" --set kafka.securityProtocol=SASL_PLAINTEXT --set kafka.sasl.password=p
refuses "unknown security protocol" --set kafka.securityProtocol=TLS
refuses "worker without modules" --set 'worker.modules=null'
refuses "alert threshold not a number" --set metrics.prometheusRule.enabled=true \
    --set metrics.prometheusRule.fireLatenessHigh.threshold=1s

step "promtool check rules on the PrometheusRule of each value set"
PROMTOOL="${PROMTOOL:-$(command -v promtool || true)}"
if [[ -n "$PROMTOOL" && -x "$PROMTOOL" ]]; then
    rules="$(mktemp --suffix=.json)"
    trap 'rm -f "$rules"' EXIT
    for values in "$CHART"/ci/*.yaml; do
        "$HELM" template ci "$CHART" -f "$values" --set metrics.prometheusRule.enabled=true \
                --show-only templates/prometheusrule.yaml \
            | "$PYTHON" -c 'import json, sys; from ruamel.yaml import YAML
json.dump(YAML(typ="safe").load(sys.stdin)["spec"], sys.stdout)' > "$rules" \
            && "$PROMTOOL" check rules "$rules" >/dev/null \
            || fail "promtool check rules: the PrometheusRule of -f $values"
    done
else
    fail "promtool is not installed: apt-get install prometheus (or set PROMTOOL)"
fi

step "docker-compose.yml against the Compose specification schema"
if "$PYTHON" -c 'import check_jsonschema' 2>/dev/null; then
    "$PYTHON" -m check_jsonschema --builtin-schema vendor.compose-spec docker-compose.yml \
        || fail "docker-compose.yml does not match the Compose schema"
else
    fail "check-jsonschema is not installed: $PYTHON -m pip install 'check-jsonschema>=0.29,<0.38'"
fi
if docker compose version >/dev/null 2>&1; then
    step "docker compose config"
    docker compose -f docker-compose.yml config -q || fail "docker compose config"
fi

if (( failures )); then
    echo "check-deploy: $failures check(s) failed" >&2
    exit 1
fi
echo "check-deploy: all checks passed"
