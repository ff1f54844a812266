// The API token: asked for when the API answers 401, kept in sessionStorage only (this
// tab, until it closes), sent as a bearer header by api.js, never put in a URL.
import { $ } from './dom.js';

const KEY = 'imageblur.token';
let asking = null;

export function getToken() {
  return sessionStorage.getItem(KEY);
}

export function forgetToken() {
  sessionStorage.removeItem(KEY);
}

// One prompt for every request that needs it; resolves once a token is saved, rejects
// when the person cancels.
export function askForToken(reason) {
  if (asking) return asking;
  asking = new Promise((resolve, reject) => {
    const dialog = $('token-dialog');
    const input = $('token-input');
    $('token-reason').textContent = reason;
    input.value = '';
    const finish = (token) => {
      dialog.removeEventListener('close', onClose);
      $('token-form').removeEventListener('submit', onSubmit);
      $('token-cancel').removeEventListener('click', onCancel);
      if (dialog.open) dialog.close();
      asking = null;
      if (token) resolve(token);
      else reject(new Error('no API token given'));
    };
    const onSubmit = (event) => {
      event.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      sessionStorage.setItem(KEY, token);
      finish(token);
    };
    const onCancel = () => finish(null);
    const onClose = () => finish(null);
    $('token-form').addEventListener('submit', onSubmit);
    $('token-cancel').addEventListener('click', onCancel);
    dialog.addEventListener('close', onClose);
    dialog.showModal();
    input.focus();
  });
  return asking;
}

export function initTokenButton(onChange) {
  $('token-button').addEventListener('click', async () => {
    try {
      await askForToken('Enter the API token for this server.');
      onChange();
    } catch {
      // Cancelled: keep what was there.
    }
  });
  $('token-forget').addEventListener('click', () => {
    forgetToken();
    $('token-dialog').close();
  });
}
