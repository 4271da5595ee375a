// The interests field: a tag input whose tags are shown as removable chips
// and remembered in localStorage. Tags follow the protocol's rules: trimmed,
// lower-cased, 1–32 characters (Unicode scalar values), at most 8, no duplicates.

export const MAX_TAGS = 8;
export const MAX_TAG_CHARS = 32;
const STORAGE_KEY = 'roulette.interests';

/** Normalises one tag as the server does; '' when nothing is left. */
export function normalizeTag(raw) {
  return String(raw).trim().toLowerCase();
}

export function tagLength(tag) {
  return [...tag].length;
}

function load() {
  try {
    const parsed = JSON.parse(window.localStorage.getItem(STORAGE_KEY) || '[]');
    if (!Array.isArray(parsed)) return [];
    const out = [];
    for (const t of parsed) {
      if (typeof t !== 'string') continue;
      const n = normalizeTag(t);
      if (n && tagLength(n) <= MAX_TAG_CHARS && !out.includes(n)) out.push(n);
      if (out.length === MAX_TAGS) break;
    }
    return out;
  } catch {
    return [];
  }
}

function save(tags) {
  try {
    window.localStorage.setItem(STORAGE_KEY, JSON.stringify(tags));
  } catch {
    // Private mode or storage disabled: the tags just aren't remembered.
  }
}

export class TagInput {
  /**
   * @param {{list: HTMLElement, input: HTMLInputElement, box: HTMLElement,
   *          hint: HTMLElement, onChange?: (tags: string[]) => void}} els
   */
  constructor({ list, input, box, hint, onChange }) {
    this.list = list;
    this.input = input;
    this.box = box;
    this.hint = hint;
    this.defaultHint = hint.textContent;
    this.onChange = onChange;
    this.tags = load();
    this.hintTimer = 0;

    input.addEventListener('keydown', (e) => this.onKeyDown(e));
    input.addEventListener('input', () => this.onInput());
    input.addEventListener('blur', () => this.commit());
    box.addEventListener('click', (e) => {
      if (e.target === box || e.target === list) input.focus();
    });
    this.render();
  }

  /** The current tags (copies). */
  get value() {
    return [...this.tags];
  }

  onKeyDown(e) {
    if (e.isComposing) return;
    if (e.key === 'Enter' || e.key === ',') {
      e.preventDefault();
      this.commit();
    } else if (e.key === 'Backspace' && this.input.value === '' && this.tags.length > 0) {
      e.preventDefault();
      this.remove(this.tags.length - 1, false);
    }
  }

  onInput() {
    // Pasted "a, b, c" becomes three tags; the text after the last comma stays.
    const v = this.input.value;
    if (!v.includes(',')) return;
    const parts = v.split(',');
    const rest = parts.pop();
    for (const p of parts) this.add(p);
    this.input.value = rest.trimStart();
  }

  /** Turns whatever is typed in the input into a tag. */
  commit() {
    const v = this.input.value;
    if (v.trim() === '') {
      this.input.value = '';
      return;
    }
    if (this.add(v)) this.input.value = '';
  }

  add(raw) {
    const tag = normalizeTag(raw);
    if (!tag) return true;
    if (tagLength(tag) > MAX_TAG_CHARS) {
      this.flash(`Interests can be at most ${MAX_TAG_CHARS} characters long.`);
      return false;
    }
    if (this.tags.includes(tag)) return true;
    if (this.tags.length >= MAX_TAGS) {
      this.flash(`You can add up to ${MAX_TAGS} interests.`);
      return false;
    }
    this.tags.push(tag);
    this.changed();
    return true;
  }

  remove(index, refocus = true) {
    this.tags.splice(index, 1);
    this.changed();
    if (refocus) this.input.focus();
  }

  changed() {
    save(this.tags);
    this.render();
    this.onChange?.(this.value);
  }

  flash(text) {
    this.hint.textContent = text;
    this.hint.classList.add('warn');
    window.clearTimeout(this.hintTimer);
    this.hintTimer = window.setTimeout(() => {
      this.hint.textContent = this.defaultHint;
      this.hint.classList.remove('warn');
    }, 4000);
  }

  render() {
    const chips = this.tags.map((tag, i) => {
      const li = document.createElement('li');
      li.className = 'chip';
      const label = document.createElement('span');
      label.className = 'chip-label';
      label.textContent = tag;
      const btn = document.createElement('button');
      btn.type = 'button';
      btn.className = 'chip-remove';
      btn.setAttribute('aria-label', `Remove interest ${tag}`);
      btn.textContent = '×';
      btn.addEventListener('click', () => this.remove(i));
      li.append(label, btn);
      return li;
    });
    this.list.replaceChildren(...chips);
    this.list.hidden = chips.length === 0;
    const full = this.tags.length >= MAX_TAGS;
    this.input.placeholder = full
      ? "That's the maximum of 8"
      : this.tags.length
        ? 'Add another…'
        : 'Add an interest, e.g. music';
  }
}
