// The page's shell: the two views as tabs, the API key prompt, and the error panel that shows
// the server's own error envelope.

import { get, onKeyNeeded, setKey } from "./api.js";
import { initPlayground, showModels } from "./playground.js";
import { startServerView, stopServerView } from "./server.js";

function showError(error) {
  const panel = document.getElementById("error");
  const title = document.getElementById("error-title");
  const body = document.getElementById("error-body");
  if (error.status !== undefined) {
    title.textContent = `The server answered ${error.status} to ${error.path}`;
    body.textContent = typeof error.body === "string" ? error.body : JSON.stringify(error.body, null, 2);
  } else {
    title.textContent = "Error";
    body.textContent = String(error.message || error);
  }
  panel.hidden = false;
}

function clearError() {
  document.getElementById("error").hidden = true;
}

function askForKey() {
  const panel = document.getElementById("key-panel");
  panel.hidden = false;
  document.getElementById("api-key").focus();
}

function tabs() {
  const buttons = [...document.querySelectorAll('[role="tab"]')];
  const select = (chosen) => {
    for (const button of buttons) {
      const on = button === chosen;
      button.setAttribute("aria-selected", String(on));
      button.tabIndex = on ? 0 : -1;
      document.getElementById(button.getAttribute("aria-controls")).hidden = !on;
    }
    if (chosen.id === "tab-server") startServerView(showError);
    else stopServerView();
  };
  buttons.forEach((button, i) => {
    button.addEventListener("click", () => select(button));
    button.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      const next = buttons[(i + step + buttons.length) % buttons.length];
      next.focus();
      select(next);
    });
  });
}

async function loadModels() {
  try {
    const { data } = await get("/v1/models");
    clearError();
    showModels(data.data);
  } catch (error) {
    showError(error);
  }
}

tabs();
initPlayground(showError, clearError);
onKeyNeeded(askForKey);
document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const field = document.getElementById("api-key");
  setKey(field.value);
  field.value = "";  // held in one variable only, not in the form as well
  document.getElementById("key-panel").hidden = true;
  clearError();  // the keyless request's 401 is answered; what the new key gets shows next
  loadModels();
});
loadModels();
