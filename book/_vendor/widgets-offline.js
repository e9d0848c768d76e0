// Written for this book (not vendored): what @jupyter-widgets/html-manager needs to render saved widgets
// from the book's own files. Loaded after requirejs/require.js and before html-manager/embed-amd.js
// (nb_ipywidgets_js in _config.yml).
(function () {
  // 1. Each bundled module (@jupyter-widgets/base, controls, html-manager, .../dist/libembed-amd) looks
  //    for the icon fonts next to the URL RequireJS gives its name, by default under
  //    <page folder>/@jupyter-widgets/: map those names into this folder's html-manager/.
  var here = document.currentScript.src.replace(/[^/]*$/, "");
  require.config({paths: {"@jupyter-widgets": here + "html-manager",
                          "@jupyter-widgets/html-manager/dist": here + "html-manager"}});

  // 2. It typesets widget labels with MathJax 2's MathJax.Hub.Queue(["Typeset", MathJax.Hub, element]);
  //    the book loads MathJax 3, which has no Hub ("Cannot read properties of undefined (reading
  //    'Queue')"). Map the call onto MathJax 3's typesetPromise. MathJax 3 replaces the global MathJax
  //    object when its deferred script runs, so install this at DOMContentLoaded (after that, and before
  //    the widgets render on the window's load event).
  document.addEventListener("DOMContentLoaded", function () {
    var mj = window.MathJax;
    if (!mj || mj.Hub || typeof mj.typesetPromise !== "function") return;
    mj.Hub = {
      Queue: function (job) {
        var element = job && job[2];
        mj.typesetPromise(element ? [element] : undefined).catch(function (err) {
          console.warn("MathJax could not typeset a widget label:", err);
        });
      }
    };
  });
})();
