// What the page holds per picture: the result's object URL (fetched once) and the file
// the person chose (the "before": it stays in the browser and is never sent back).
import { resultBlobUrl } from './api.js';

const results = new Map();
const originals = new Map();
const changed = new Set(); // results forgotten: the browser's cached copy may be stale

export function resultUrl(id) {
  if (!results.has(id)) {
    const url = resultBlobUrl(id, { reload: changed.has(id) });
    url.catch(() => results.delete(id));
    results.set(id, url);
  }
  return results.get(id);
}

export function rememberOriginal(id, file) {
  originals.set(id, file);
}

export function originalFile(id) {
  return originals.get(id) || null;
}

// After a delete, or when a result changed (a review correction): forget it.
export function forget(id, { keepOriginal = false } = {}) {
  const url = results.get(id);
  results.delete(id);
  changed.add(id);
  if (url) url.then((u) => URL.revokeObjectURL(u), () => {});
  if (!keepOriginal) originals.delete(id);
}

// Pages tell each other what happened through events on the document.
export function announce(name, detail) {
  document.dispatchEvent(new CustomEvent(name, { detail }));
}

export function on(name, handler) {
  document.addEventListener(name, (event) => handler(event.detail));
}
