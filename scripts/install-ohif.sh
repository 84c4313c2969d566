#!/usr/bin/env bash
# Install the prebuilt OHIF viewer (npm @ohif/app, its dist/) into third_party/ohif/, set up
# to be served by `dcmstream serve` at /ohif against our DICOMweb root /dicomweb.
# Idempotent: does nothing when that version is already installed (--force reinstalls).
# Not committed (about 200 MB); the server mounts /ohif only when this folder exists.
#   bash scripts/install-ohif.sh [--force]
set -euo pipefail
cd "$(dirname "$0")/.."
OHIF_VERSION="${OHIF_VERSION:-3.12.10}"
dest="third_party/ohif"
if [ "${1:-}" != "--force" ] && [ -f "$dest/index.html" ] && [ "$(cat "$dest/.ohif-version" 2>/dev/null)" = "$OHIF_VERSION" ]; then
    echo "install-ohif.sh: OHIF $OHIF_VERSION already in $dest"
    exit 0
fi
command -v npm >/dev/null || { echo "install-ohif.sh: npm is needed (Debian: apt-get install npm)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# One tarball, no dependency tree: the package's dist/ is the complete built app.
(cd "$work" && npm pack --silent "@ohif/app@${OHIF_VERSION}" >/dev/null)
tar -xzf "$work"/ohif-app-*.tgz -C "$work" package/dist
rm -rf "$dest.tmp"
mkdir -p "$(dirname "$dest")"  # a fresh clone has no third_party/
mv "$work/package/dist" "$dest.tmp"

# Serve from the /ohif/ sub-path: PUBLIC_URL and the absolute src/href of index.html.
sed -i \
    -e "s#window.PUBLIC_URL = '/'#window.PUBLIC_URL = '/ohif/'#" \
    -e 's#src="/#src="/ohif/#g' \
    -e 's#href="/#href="/ohif/#g' \
    "$dest.tmp/index.html"
grep -q "PUBLIC_URL = '/ohif/'" "$dest.tmp/index.html" || { echo "install-ohif.sh: index.html has no PUBLIC_URL to rewrite (OHIF $OHIF_VERSION changed?)" >&2; exit 1; }
# Stylesheets reference fonts from the root too.
sed -i 's#url(/#url(/ohif/#g' "$dest.tmp"/*.css
# webpack's public path is compiled in as "/" (the app bundle and its worker bundles): lazy
# chunks would load from the server root. Point it at the sub-path too.
grep -l '__webpack_require__.p = "/";' "$dest.tmp"/*.js | xargs -r sed -i 's#__webpack_require__.p = "/";#__webpack_require__.p = "/ohif/";#'
grep -q '__webpack_require__.p = "/ohif/";' "$dest.tmp"/app.bundle.*.js || { echo "install-ohif.sh: no webpack public path to rewrite in app.bundle (OHIF $OHIF_VERSION changed?)" >&2; exit 1; }

# One data source: our DICOMweb root on the same origin (no CORS needed).
cat > "$dest.tmp/app-config.js" <<'JS'
/** dcmstream: OHIF served at /ohif/ by `dcmstream serve`, reading /dicomweb (same origin). */
(function () {
  var root = window.location.origin + '/dicomweb';
  window.config = {
    routerBasename: '/ohif',
    showStudyList: true,
    extensions: [],
    modes: [],
    customizationService: {},
    maxNumberOfWebWorkers: 2,
    showWarningMessageForCrossOrigin: false,
    showCPUFallbackMessage: false,
    showLoadingIndicator: true,
    strictZSpacingForVolumeViewport: true,
    investigationalUseDialog: { option: 'never' },
    defaultDataSourceName: 'dcmstream',
    dataSources: [
      {
        namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
        sourceName: 'dcmstream',
        configuration: {
          friendlyName: 'dcmstream archive',
          name: 'dcmstream',
          wadoUriRoot: root,
          qidoRoot: root,
          wadoRoot: root,
          qidoSupportsIncludeField: true,
          supportsReject: false,
          imageRendering: 'wadors',
          thumbnailRendering: 'wadors',
          enableStudyLazyLoad: true,
          supportsFuzzyMatching: false,
          supportsWildcard: true,
          staticWado: false,
          singlepart: 'bulkdata,video',
          bulkDataURI: { enabled: true },
          omitQuotationForMultipartRequest: true,
        },
      },
    ],
  };
})();
JS
echo "$OHIF_VERSION" > "$dest.tmp/.ohif-version"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "install-ohif.sh: OHIF $OHIF_VERSION installed in $dest ($(du -sh "$dest" | cut -f1)); served at /ohif by dcmstream serve"
