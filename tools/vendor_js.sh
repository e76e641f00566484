#!/usr/bin/env bash
# Refresh the vendored JavaScript in book/_vendor from the npm registry (make vendor).
set -euo pipefail
cd "$(dirname "$0")/.."
HM=1.0.15 RJS=2.3.8 MJ=3.2.2
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "@jupyter-widgets/html-manager@$HM" "requirejs@$RJS" "mathjax@$MJ" >/dev/null)
for f in "$tmp"/*.tgz; do mkdir -p "${f%.tgz}" && tar xzf "$f" -C "${f%.tgz}"; done
out=book/_vendor
rm -rf "$out/html-manager" "$out/mathjax" "$out/require.js"
mkdir -p "$out/html-manager" "$out/mathjax/output/chtml/fonts"
cp "$tmp"/requirejs-*/package/require.js "$out/require.js"
cp "$tmp"/jupyter-widgets-html-manager-*/package/dist/embed-amd.js "$tmp"/jupyter-widgets-html-manager-*/package/dist/*.woff* "$out/html-manager/"
mj="$tmp"/mathjax-*/package
cp "$mj/LICENSE" "$mj/es5/tex-chtml-full.js" "$out/mathjax/"
cp -r "$mj/es5/output/chtml/fonts/woff-v2" "$out/mathjax/output/chtml/fonts/"
cp -r "$mj/es5/ui" "$mj/es5/a11y" "$out/mathjax/"
echo "vendored html-manager $HM, requirejs $RJS, mathjax $MJ into $out"
