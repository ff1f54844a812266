// Small DOM helpers. Text from users (file names, server messages) only ever goes in as
// text nodes or textContent, never as HTML.

export function $(id) {
  return document.getElementById(id);
}

// h('li', {class: 'card', onclick: fn}, 'text', child): an element with attributes,
// listeners and children; strings become text nodes.
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) el.append(child);
  }
  return el;
}

export function svg(tag, attrs = {}) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  return el;
}

// Decimal units, as the server's messages and the stated limits (messages.js megabytes).
export function formatBytes(bytes) {
  if (bytes < 1000) return `${bytes} B`;
  if (bytes < 1000 * 1000) return `${(bytes / 1000).toFixed(0)} KB`;
  return `${(bytes / 1000 / 1000).toFixed(1)} MB`;
}

export function formatDate(text) {
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? text : date.toLocaleString();
}

// Resolve after `ms`; used for polling and for waiting out a 503's Retry-After.
export function delay(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Focus an element that is not a control (a heading, a status line) without adding it
// to the Tab order: where focus goes when the control it was on has gone.
export function focusQuietly(element) {
  if (!element) return;
  if (!element.matches('a[href], button, input, select, textarea, [tabindex]')) {
    element.setAttribute('tabindex', '-1');
  }
  element.focus({ preventScroll: false });
}

// The first control in `element` that takes focus (enabled, shown), or null.
export function firstControl(element) {
  const controls = element?.querySelectorAll('a[href], button, input, select, textarea') || [];
  return [...controls].find((c) => !c.disabled && c.getClientRects().length > 0) || null;
}

// Remove a list item (a card, a row) without dropping focus to the page body: when focus
// was inside it, it moves to the next item's first control, else the previous item's,
// else `fallback`.
export function removeKeepingFocus(item, fallback) {
  const hadFocus = item.contains(document.activeElement);
  const next = item.nextElementSibling;
  const previous = item.previousElementSibling;
  item.remove();
  if (!hadFocus) return;
  const target = firstControl(next) || firstControl(previous);
  if (target) target.focus();
  else focusQuietly(fallback);
}
