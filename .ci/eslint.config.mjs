// ESLint's recommended rules for the web page's modules (src/embedserve/web), run by .ci/run
// from a folder where it installs ESLint, so the project itself carries no node_modules.
import js from "@eslint/js";
import globals from "globals";

export default [
  js.configs.recommended,
  { languageOptions: { sourceType: "module", globals: globals.browser } },
];
