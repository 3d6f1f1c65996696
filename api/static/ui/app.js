// The dashboard's shared script layer (every page loads it).
//
// Live regions: an element with an id and data-live="MS" is fetched again from the page's own
// URL every MS milliseconds (while the tab is visible) and replaced by the element with the same
// id in the answer; it stops once the fresh copy has no data-live (nothing left to watch).
// noisyfit.refresh(ids) does one such update at once (the job page calls it on status events).
(function () {
  "use strict";
  const noisyfit = (window.noisyfit = window.noisyfit || {});

  noisyfit.refresh = async function (ids) {
    const response = await fetch(location.href, { headers: { Accept: "text/html" }, cache: "no-store" });
    if (response.redirected && new URL(response.url).pathname.endsWith("/ui/login")) {
      location.reload(); // the session ended: the page itself leads to the sign-in form
      return false;
    }
    if (!response.ok) return false;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const id of ids) {
      const old = document.getElementById(id);
      const replacement = fresh.getElementById(id);
      if (old && replacement) update(old, replacement);
    }
    document.dispatchEvent(new CustomEvent("noisyfit:refreshed", { detail: { ids } }));
    return true;
  };

  // The element stays (an aria-live region keeps announcing); its attributes and children change.
  // Checkboxes the visitor ticked in it (the jobs to compare) stay ticked.
  function update(element, replacement) {
    const ticked = new Set(Array.from(element.querySelectorAll("input[type=checkbox][name]:checked"),
      (box) => `${box.name}=${box.value}`));
    for (const name of element.getAttributeNames()) {
      if (!replacement.hasAttribute(name)) element.removeAttribute(name);
    }
    for (const name of replacement.getAttributeNames()) element.setAttribute(name, replacement.getAttribute(name));
    element.replaceChildren(...Array.from(replacement.childNodes, (node) => document.importNode(node, true)));
    for (const box of element.querySelectorAll("input[type=checkbox][name]")) {
      if (ticked.has(`${box.name}=${box.value}`)) box.checked = true;
    }
  }

  function watch() {
    const live = Array.from(document.querySelectorAll("[data-live][id]"));
    if (!live.length) return;
    const delay = Math.max(500, Math.min(...live.map((el) => Number(el.dataset.live) || 3000)));
    setTimeout(async () => {
      if (!document.hidden) {
        try {
          await noisyfit.refresh(live.map((el) => el.id));
        } catch (error) {
          console.warn("live update failed; trying again", error);
        }
      }
      watch();
    }, delay);
  }

  document.addEventListener("DOMContentLoaded", watch);
})();
