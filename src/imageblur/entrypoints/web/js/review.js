// The review screen (GET/PUT picture/{id}/regions with ETag/If-Match, POST
// picture/{id}/approve). It attaches to the result view of a picture in status "review",
// which only a server with IMAGEBLUR_REVIEW=required holds; otherwise it stays out of the way.
import { ApiError, getJson, request } from './api.js';
import { $, delay, h, svg } from './dom.js';
import { errorHeadline, isFinal, statusWords } from './messages.js';
import { announce, forget } from './pictures.js';
import { addResultExtension, currentRecord, drawRegions } from './result.js';

const POLL_MS = 1000;
// How long a save waits for its re-render: as long as an upload waits for its first
// result (uploads.js); past it the render is left to finish while the person does else.
const RENDER_LIMIT_MS = 15 * 60 * 1000;
const MIN_BOX_PX = 4;
const MAX_REASON_CHARS = 500; // the server's limit on a reason (422 reason_required without)
// What to tell the reviewer once the view has been reopened on a picture (after a save
// or an approval): the view is rebuilt, so the note is handed over by picture id.
const notes = new Map();

addResultExtension(({ record, container }) => {
  const note = notes.get(record.id) || '';
  notes.delete(record.id);
  if (record.status === 'review') new Review(record, container).load(note);
  else if (note) container.replaceChildren(h('p', { id: 'review-message', class: 'note', role: 'status', text: note }));
});

class Review {
  constructor(record, container) {
    this.record = record;
    this.container = container;
    this.revision = null;
    this.regions = []; // as loaded, with the wanted `hidden` and `reason`
    this.added = []; // new manual boxes {x, y, width, height}
    this.message = h('p', { id: 'review-message', class: 'note', role: 'status' });
    this.revisionText = h('p', { class: 'meta' });
    this.list = h('ul', { class: 'regions-list', 'aria-label': 'Regions' });
    this.uncertainList = h('ul', { class: 'regions-list', 'aria-label': 'Uncertain candidates' });
    this.addedList = h('ul', { class: 'regions-list', 'aria-label': 'New boxes' });
    this.drawButton = h('button', { type: 'button', id: 'draw-button', class: 'secondary',
      'aria-pressed': 'false', onclick: () => this.toggleDrawing() }, 'Draw a box');
    this.saveButton = h('button', { type: 'button', id: 'save-button', onclick: () => this.save() },
      'Save corrections');
    this.approveButton = h('button', { type: 'button', id: 'approve-button',
      onclick: () => this.approve() }, 'Approve and release');
    container.replaceChildren(h('section', { class: 'review', 'aria-labelledby': 'review-title' },
      h('h3', { id: 'review-title', text: 'Review' }), this.revisionText,
      h('p', { class: 'note', text: 'Tick the regions to hide. Uncertain candidates scored '
        + 'below the detection threshold: hide those that are faces.' }),
      this.message,
      h('h4', { text: 'Regions' }), this.list,
      h('h4', { text: 'Uncertain candidates' }), this.uncertainList,
      h('h4', { text: 'New boxes' }), this.addedList,
      h('div', { class: 'toolbar' }, this.drawButton, this.saveButton, this.approveButton)));
  }

  async load(note = '') {
    try {
      const response = await request(`picture/${encodeURIComponent(this.record.id)}/regions`);
      const body = await response.json();
      this.revision = response.headers.get('ETag') || `"${body.revision}"`;
      // Showing what the detector hid (not an uncertain candidate) needs a reason.
      this.regions = body.regions.map((region) => ({ ...region, reason: '',
        needsReason: region.hidden && region.source === 'detector' && !region.uncertain }));
      this.revisionText.textContent = `Revision ${body.revision}`;
      this.added = [];
      this.render();
      this.message.textContent = note;
    } catch (error) {
      this.say(error);
    }
  }

  render() {
    const item = (region) => {
      const id = `region-${region.id}`;
      const box = h('input', { type: 'checkbox', id, 'data-region': region.id });
      box.checked = region.hidden;
      const reason = this.reasonField(region);
      box.addEventListener('change', () => {
        region.hidden = box.checked;
        reason.hidden = !(region.needsReason && !region.hidden);
        this.draw();
      });
      const score = region.score === null ? 'manual' : `score ${region.score.toFixed(2)}`;
      return h('li', {}, box, h('label', { for: id, class: 'inline',
        text: `Hide ${region.kind} ${region.id} (${score}, ${region.width} × ${region.height} px)` }),
      reason);
    };
    this.list.replaceChildren(...this.regions.filter((r) => !r.uncertain).map(item));
    this.uncertainList.replaceChildren(...this.regions.filter((r) => r.uncertain).map(item));
    this.addedList.replaceChildren(...this.added.map((box, i) => h('li', {},
      `New box ${i + 1}: ${box.width} × ${box.height} px at (${box.x}, ${box.y}) `,
      h('button', { type: 'button', class: 'secondary', onclick: () => {
        this.added.splice(i, 1);
        this.render();
      } }, `Remove new box ${i + 1}`))));
    this.draw();
  }

  // Where a reviewer says why a region the detector hid should be shown; kept in the
  // picture's audit trail. Shown only while such a region is unticked.
  reasonField(region) {
    const id = `reason-${region.id}`;
    const input = h('input', { type: 'text', id, class: 'reason', 'data-reason': region.id,
      maxlength: MAX_REASON_CHARS, autocomplete: 'off' });
    input.value = region.reason;
    input.addEventListener('input', () => {
      region.reason = input.value;
    });
    const field = h('span', { class: 'reason-field' },
      h('label', { for: id, class: 'inline', text: `Why show ${region.kind} ${region.id}? ` }),
      input);
    field.hidden = !(region.needsReason && !region.hidden);
    return field;
  }

  draw() {
    const manual = this.added.map((box, i) => ({ ...box, id: `new${i + 1}`, hidden: true,
      uncertain: false }));
    drawRegions(this.record, [...this.regions, ...manual]);
  }

  // Drawing: pointer events, so a mouse, a pen and a finger all work.
  toggleDrawing() {
    const layer = $('regions');
    const on = this.drawButton.getAttribute('aria-pressed') !== 'true';
    this.drawButton.setAttribute('aria-pressed', String(on));
    layer.classList.toggle('drawing', on);
    if (!on) {
      layer.onpointerdown = null;
      return;
    }
    this.draw();
    layer.onpointerdown = (event) => this.startBox(event, layer);
  }

  startBox(event, layer) {
    event.preventDefault();
    layer.setPointerCapture(event.pointerId);
    const start = this.toImage(event, layer);
    const rect = svg('rect', { class: 'drawing-box', x: start.x, y: start.y, width: 0, height: 0 });
    layer.append(rect);
    const box = (point) => ({
      x: Math.round(Math.min(start.x, point.x)),
      y: Math.round(Math.min(start.y, point.y)),
      width: Math.round(Math.abs(point.x - start.x)),
      height: Math.round(Math.abs(point.y - start.y)),
    });
    layer.onpointermove = (move) => {
      for (const [key, value] of Object.entries(box(this.toImage(move, layer)))) {
        rect.setAttribute(key, value);
      }
    };
    layer.onpointerup = (up) => {
      layer.onpointermove = null;
      layer.onpointerup = null;
      const drawn = box(this.toImage(up, layer));
      if (drawn.width >= MIN_BOX_PX && drawn.height >= MIN_BOX_PX) this.added.push(drawn);
      this.render();
    };
  }

  toImage(event, layer) {
    const bounds = layer.getBoundingClientRect();
    const clamp = (v, max) => Math.max(0, Math.min(max, v));
    return {
      x: clamp(((event.clientX - bounds.left) / bounds.width) * this.record.width, this.record.width),
      y: clamp(((event.clientY - bounds.top) / bounds.height) * this.record.height, this.record.height),
    };
  }

  async save() {
    if (this.saving) return;
    const unexplained = this.regions.find((r) => r.needsReason && !r.hidden && !r.reason.trim());
    if (unexplained) {
      this.message.textContent = `Say why ${unexplained.kind} ${unexplained.id} should be shown: `
        + 'the detector hid it.';
      $(`reason-${unexplained.id}`)?.focus();
      return;
    }
    const regions = [
      ...this.regions.map(({ id, hidden, reason, needsReason }) => (
        needsReason && !hidden ? { id, hidden, reason: reason.trim() } : { id, hidden })),
      ...this.added.map((box) => ({ ...box, hidden: true })),
    ];
    this.busy(true);
    try {
      await request(`picture/${encodeURIComponent(this.record.id)}/regions`, {
        method: 'PUT',
        headers: { 'Content-Type': 'application/json', 'If-Match': this.revision },
        body: JSON.stringify({ regions }),
      });
    } catch (error) {
      this.busy(false);
      if (error instanceof ApiError && error.status === 412) {
        await this.load('Someone else changed these regions meanwhile: they have been '
          + 'reloaded. Make your corrections again.');
        return;
      }
      this.say(error);
      return;
    }
    this.message.textContent = 'Saved: the picture is being rendered again…';
    const record = await this.waitForRender();
    this.busy(false);
    // A render that failed leaves the picture in review with its previous result.
    if (record) {
      this.reopen(record, record.error
        ? `The new result could not be made (${record.error}); the previous one is shown. `
          + 'Save again to render your corrections: until then it cannot be approved.'
        : 'The new result is shown.');
    }
  }

  // While a save is sent and rendered, no second save or approval (approval would only
  // answer 409 rendering); the buttons stay focusable, so the keyboard is not lost.
  busy(on) {
    for (const button of [this.saveButton, this.approveButton]) {
      button.setAttribute('aria-disabled', String(on));
    }
    this.saving = on;
  }

  // The picture once its re-render ended (it is back in review, or failed), or null when
  // that did not happen within RENDER_LIMIT_MS or the poll failed (the message says which).
  async waitForRender() {
    const started = Date.now();
    for (;;) {
      if (Date.now() - started > RENDER_LIMIT_MS) {
        this.message.textContent = 'Saved, but the new result is still not rendered after '
          + `${RENDER_LIMIT_MS / 60000} minutes (no worker free?). Open the picture again `
          + 'later: it can be approved once its new result is there.';
        return null;
      }
      await delay(POLL_MS);
      try {
        const record = await getJson(`picture/${encodeURIComponent(this.record.id)}`);
        if (isFinal(record.status)) return record;
        this.message.textContent = `${statusWords(record.status)}`;
      } catch (error) {
        this.say(error);
        return null;
      }
    }
  }

  async approve() {
    if (this.saving) return;
    try {
      const response = await request(`picture/${encodeURIComponent(this.record.id)}/approve`,
        { method: 'POST' });
      const record = await response.json();
      this.reopen(record, 'Approved: the picture is released and its original deleted.');
    } catch (error) {
      this.say(error);
    }
  }

  // The result changed (or was released): drop the old one and show the picture again,
  // unless the person moved on to another picture meanwhile.
  reopen(record, note) {
    forget(record.id, { keepOriginal: true });
    announce('picture:changed', record.id);
    announce('picture:reviewed', record); // its upload card shows the new state
    if (currentRecord()?.id !== record.id) return;
    notes.set(record.id, note);
    announce('picture:open', record);
  }

  say(error) {
    if (error instanceof ApiError && error.status === 403) {
      this.message.textContent = 'Corrections and approval need the reviewer token: '
        + 'enter it with the "API token" button.';
      return;
    }
    this.message.textContent = error instanceof ApiError
      ? `${errorHeadline(error)} ${error.message}` : String(error.message || error);
  }
}
