/* LLM Lab page helpers (no dependencies, nothing fetched).
 *
 * Search snippets are cut from the pages' HTML, where math is still TeX source (MathJax
 * typesets in the browser): show "-∞" rather than "\(-\infty\)"; and they start at the
 * content, not at the header's buttons or the page's table of contents.
 */
(function () {
  "use strict";

  var SYMBOLS = {
    infty: "∞", cdot: "·", times: "×", le: "≤", leq: "≤", ge: "≥", geq: "≥", ne: "≠",
    approx: "≈", sim: "∼", to: "→", rightarrow: "→", leftarrow: "←", sum: "Σ", prod: "Π",
    sqrt: "√", alpha: "α", beta: "β", gamma: "γ", delta: "δ", epsilon: "ε", varepsilon: "ε",
    eta: "η", theta: "θ", lambda: "λ", mu: "μ", pi: "π", sigma: "σ", tau: "τ", phi: "φ",
    Phi: "Φ", odot: "⊙", partial: "∂", ell: "ℓ", in: "∈", log: "log", exp: "exp",
    max: "max", min: "min", mathrm: "", text: "", mathbf: "", operatorname: "", left: "",
    right: "", lVert: "‖", rVert: "‖", quad: " ", qquad: " ",
  };
  function plainMath(tex) {
    return tex
      .replace(/\\[()\[\]]/g, " ")
      .replace(/\\(begin|end)\{[^}]*\}/g, " ")
      .replace(/\\\\|&/g, " ")
      .replace(/\\frac\{([^{}]*)\}\{([^{}]*)\}/g, "($1)/($2)")
      .replace(/\\([A-Za-z]+)/g, function (m, name) {
        return name in SYMBOLS ? SYMBOLS[name] : name;
      })
      .replace(/\\[,;:!]/g, " ")
      .replace(/[{}]/g, "")
      .replace(/\s+/g, " ")
      .trim();
  }
  var FURNITURE = ".bd-header-article, .bd-sidebar-secondary, .onlyprint, .lmlab-lang-choice, " +
    ".prev-next-area";
  function patchSearch() {
    // searchtools.js declares `const Search` at the top level: a global binding, not a
    // property of window
    var S = typeof Search !== "undefined" ? Search : window.Search;
    if (!S || typeof S.htmlToText !== "function" || S.htmlToText.lmlab) return;
    var original = S.htmlToText;
    S.htmlToText = function (htmlString, anchor) {
      var doc = new DOMParser().parseFromString(htmlString, "text/html");
      // page furniture, not content: the header buttons (with the language switch), the
      // page's table of contents, the landing page's edition choice
      doc.querySelectorAll(FURNITURE).forEach(function (el) { el.remove(); });
      doc.querySelectorAll(".math").forEach(function (el) {
        el.textContent = " " + plainMath(el.textContent) + " ";
      });
      return original.call(this, doc.documentElement.outerHTML, anchor);
    };
    S.htmlToText.lmlab = true;
  }
  patchSearch();
  document.addEventListener("DOMContentLoaded", patchSearch);
  window.addEventListener("load", patchSearch);
})();
