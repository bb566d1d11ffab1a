// The review flow's keyboard: a approve, r reject (then 1-9 picks the
// reason code and rejects), e edit (Ctrl+Enter approves the edit), s skip,
// Esc leaves a field. Every key only clicks or focuses what is on the page,
// so the same actions work with a mouse and without this script.
(function () {
  "use strict";
  let rejecting = false;

  function focusArea() {
    return document.querySelector("[data-review-focus]");
  }

  function click(area, selector) {
    const target = area.querySelector(selector);
    if (target) {
      target.click();
    }
    return target;
  }

  function startRejecting(area) {
    rejecting = true;
    const codes = area.querySelector("[data-codes]");
    if (codes) {
      codes.classList.add("active");
      const first = codes.querySelector("input[type=radio]");
      if (first) {
        first.focus();
      }
    } else {
      const note = area.querySelector("[data-reject-note]");
      if (note) {
        note.focus();
      }
    }
  }

  function rejectWith(area, index) {
    const code = area.querySelector(`[data-codes] input[data-index="${index}"]`);
    if (!code) {
      return;
    }
    code.checked = true;
    rejecting = false;
    click(area, "[data-key=reject]");
  }

  document.addEventListener("htmx:afterSwap", () => {
    rejecting = false;
  });

  document.addEventListener("keydown", (event) => {
    const area = focusArea();
    if (!area || event.altKey || event.isComposing) {
      return;
    }
    const target = event.target;
    const typing = target.matches("textarea, input:not([type=radio]), select");
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && typing) {
      event.preventDefault();
      const form = target.form;
      const button = form && form.querySelector("[data-key=edit-submit], [data-key=reject]");
      if (button) {
        button.click();
      }
      return;
    }
    if (event.key === "Escape") {
      rejecting = false;
      if (typing || target.matches("input[type=radio]")) {
        target.blur();
      }
      return;
    }
    if (typing || event.ctrlKey || event.metaKey) {
      return;
    }
    if (rejecting && /^[1-9]$/.test(event.key)) {
      event.preventDefault();
      rejectWith(area, event.key);
      return;
    }
    switch (event.key) {
      case "a":
        event.preventDefault();
        click(area, "[data-key=approve]");
        break;
      case "r":
        event.preventDefault();
        startRejecting(area);
        break;
      case "e": {
        event.preventDefault();
        const edit = area.querySelector("details[data-key=edit]");
        if (edit) {
          edit.open = true;
          const field = edit.querySelector("textarea, input:not([type=hidden])");
          if (field) {
            field.focus();
          }
        }
        break;
      }
      case "s":
        event.preventDefault();
        click(area, "[data-key=skip]");
        break;
      default:
        break;
    }
  });
})();
