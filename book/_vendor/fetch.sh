#!/usr/bin/env bash
# Re-fetch the JavaScript the HTML book serves itself (so it reads offline) from the npm registry,
# at the pinned versions below, and copy the few files it needs next to this script.
# Jupyter Book copies this folder into _build/html/_static/ (html_static_path in _config.yml).
#   bash book/_vendor/fetch.sh        (needs npm; run from anywhere)
set -euo pipefail
MATHJAX=3.2.2                 # Sphinx's mathjax_path -> mathjax/tex-chtml.js
REQUIREJS=2.3.8               # myst-nb's nb_ipywidgets_js -> requirejs/require.js
HTML_MANAGER=1.0.15           # @jupyter-widgets/html-manager for ipywidgets 8 -> html-manager/embed-amd.js

here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
echo '{"name": "book-vendor", "version": "0.0.0", "private": true}' > package.json
timeout 600 npm install --no-audit --no-fund --ignore-scripts --save-exact \
    "mathjax@$MATHJAX" "requirejs@$REQUIREJS" "@jupyter-widgets/html-manager@$HTML_MANAGER"
nm="$work/node_modules"

rm -rf "$here/mathjax" "$here/requirejs" "$here/html-manager"
# MathJax: the TeX -> CommonHTML combined component, its web fonts, and the TeX extensions that
# its autoload pulls in on demand (\require, \cancel, ...), all resolved relative to tex-chtml.js.
mkdir -p "$here/mathjax/output/chtml/fonts" "$here/mathjax/input/tex"
cp "$nm/mathjax/LICENSE" "$nm/mathjax/es5/tex-chtml.js" "$here/mathjax/"
cp -r "$nm/mathjax/es5/output/chtml/fonts/woff-v2" "$here/mathjax/output/chtml/fonts/"
cp -r "$nm/mathjax/es5/input/tex/extensions" "$here/mathjax/input/tex/"

# RequireJS (the npm package ships no LICENSE file; its header says MIT, the text is written here).
mkdir -p "$here/requirejs"
cp "$nm/requirejs/require.js" "$here/requirejs/"
cat > "$here/requirejs/LICENSE" <<'LIC'
RequireJS, version as in require.js's header; "license": "MIT" in its package.json.

Copyright jQuery Foundation and other contributors, https://jquery.org/

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction,
including without limitation the rights to use, copy, modify, merge, publish, distribute,
sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT
NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES
OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN
CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
LIC

# The widget manager (AMD build, loaded through RequireJS) and the icon fonts its CSS refers to
# (woff2/woff only: every browser that runs the bundle reads one of them).
mkdir -p "$here/html-manager"
cp "$nm/@jupyter-widgets/html-manager/dist/embed-amd.js" "$here/html-manager/"
cp "$nm/@jupyter-widgets/html-manager/dist/"*.woff2 "$nm/@jupyter-widgets/html-manager/dist/"*.woff "$here/html-manager/"
cp "$nm/@jupyter-widgets/html-manager/dist/embed.js.LICENSE.txt" "$here/html-manager/THIRD-PARTY-NOTICES.txt"
cat > "$here/html-manager/LICENSE" <<'LIC'
@jupyter-widgets/html-manager ("license": "BSD-3-Clause" in its package.json); bundled third-party
code is listed in THIRD-PARTY-NOTICES.txt.

Copyright (c) 2015 Project Jupyter Contributors
All rights reserved.

Redistribution and use in source and binary forms, with or without modification, are permitted
provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice, this list of conditions
   and the following disclaimer.
2. Redistributions in binary form must reproduce the above copyright notice, this list of
   conditions and the following disclaimer in the documentation and/or other materials provided
   with the distribution.
3. Neither the name of the copyright holder nor the names of its contributors may be used to
   endorse or promote products derived from this software without specific prior written
   permission.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS OR
IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND
FITNESS FOR A PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR
CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE,
DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER
IN CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF
THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
LIC

printf 'mathjax %s\nrequirejs %s\n@jupyter-widgets/html-manager %s\n' "$MATHJAX" "$REQUIREJS" "$HTML_MANAGER" \
    > "$here/VERSIONS"
echo "vendored into $here:"; du -sh "$here"/mathjax "$here"/requirejs "$here"/html-manager
