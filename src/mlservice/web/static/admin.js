// mlservice admin pages: small enhancements; every page works without them.
"use strict";
(() => {
  // Forms that change an account ask first (the server refuses what is not allowed either way).
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.confirm) return;
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  });

  // The statistics period: the custom dates only matter when "Custom" is chosen.
  for (const select of document.querySelectorAll("select[data-custom-toggle]")) {
    const target = document.getElementById(select.dataset.customToggle);
    if (!target) continue;
    const update = () => { target.hidden = select.value !== "custom"; };
    select.addEventListener("change", update);
    update();
  }

  // Touch screens show no tooltips: a tap on a bar writes its numbers under the chart.
  document.addEventListener("click", (event) => {
    const bar = event.target instanceof Element ? event.target.closest("rect.bar") : null;
    if (!bar) return;
    const readout = bar.closest("figure")?.querySelector(".chart-readout");
    const text = bar.querySelector("title")?.textContent;
    if (!readout || !text) return;
    readout.textContent = text;
    readout.hidden = false;
    for (const other of bar.ownerSVGElement.querySelectorAll("rect.bar.selected")) other.classList.remove("selected");
    bar.classList.add("selected");
  });
})();
