// Small progressive helpers for the portal (no inline scripts: the CSP allows only this file).
(function () {
  "use strict";
  // Buttons with data-confirm ask before their form is sent.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-confirm]");
    if (button && !window.confirm(button.getAttribute("data-confirm"))) {
      event.preventDefault();
    }
  });
  // A header checkbox ticks every row checkbox of the same name.
  document.querySelectorAll("input[data-select-all]").forEach(function (all) {
    var name = all.getAttribute("data-select-all");
    all.addEventListener("change", function () {
      all.form.querySelectorAll('input[name="' + name + '"]').forEach(function (box) { box.checked = all.checked; });
    });
  });
  // Price rule forms: show the markup field for cost plus and the price field for fixed.
  document.querySelectorAll("form.price-form").forEach(function (form) {
    var rule = form.querySelector('select[name="price_rule"]');
    function sync() {
      form.querySelectorAll("input[data-rule]").forEach(function (input) {
        input.hidden = input.getAttribute("data-rule") !== rule.value;
      });
    }
    rule.addEventListener("change", sync);
    sync();
  });
})();
