/* LLM Lab: make the static widgets work offline, next to MathJax 3.
 *
 * 1. The widget manager (@jupyter-widgets/html-manager) finds its icon fonts next to the
 *    AMD module "@jupyter-widgets/html-manager/dist/...", which RequireJS resolves against
 *    the page (a 404 in every chapter folder). A global `require` defined before
 *    require.js loads is its configuration: map that module path to our copy in
 *    _static/html-manager/.
 * 2. It typesets widget labels with the MathJax 2 API, MathJax.Hub.Queue(["Typeset", ...]),
 *    which MathJax 3 no longer has. Give every MathJax object a small Hub that forwards
 *    to MathJax 3's typesetPromise. The Hub is non-enumerable, so MathJax 3 does not read
 *    it as configuration.
 */
(function () {
  var here = document.currentScript && document.currentScript.src;
  if (here) {
    var assets = here.replace(/[^/]*$/, "html-manager");
    window.__jupyter_widgets_assets_path__ = assets + "/";
    if (typeof window.require === "undefined") {
      window.require = { paths: { "@jupyter-widgets/html-manager/dist": assets } };
    }
  }

  var hub = {
    Queue: function (job) {
      var mj = window.MathJax;
      var element = Array.isArray(job) ? job[2] : null;
      if (mj && typeof mj.typesetPromise === "function" && element) {
        mj.typesetPromise([element]).catch(function () {});
      }
    },
  };

  function withHub(value) {
    if (value && typeof value === "object" && !value.Hub) {
      try {
        Object.defineProperty(value, "Hub", { value: hub, enumerable: false, configurable: true, writable: true });
      } catch (e) { /* frozen object: nothing to do */ }
    }
    return value;
  }

  var current = withHub(window.MathJax);
  Object.defineProperty(window, "MathJax", {
    configurable: true,
    get: function () { return current; },
    set: function (value) { current = withHub(value); },
  });
})();
