// Shared by the sandbox's pages (the playground and the API documentation): building DOM nodes, and the copy
// button of a code sample, and fetching JSON from this origin. Plain JavaScript, no dependency; loaded before each page's own script.
"use strict";

(() => {
  // An element with attributes (`text` sets its textContent: nothing is ever parsed as HTML) and children.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  // A "Copy" button that puts the text of `visible()` (the sample shown) on the clipboard.
  function copyButton(visible) {
    const copy = el("button", { type: "button", class: "copy", text: "Copy" });
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(visible().textContent);
        copy.textContent = "Copied";
      } catch (_) {
        copy.textContent = "Select and copy";
      }
      setTimeout(() => { copy.textContent = "Copy"; }, 2000);
    });
    return copy;
  }

  // The JSON answer of `path` on this origin; an Error with the API's error_description (after `prefix`) when
  // it answers with an error status.
  async function getJson(path, options, prefix = "") {
    const response = await fetch(path, options);
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const why = data && data.error_description ? data.error_description : `HTTP ${response.status}`;
      throw new Error(`${prefix}${why}`);
    }
    return data;
  }

  window.DcrPages = Object.freeze({ el, copyButton, getJson });
})();
