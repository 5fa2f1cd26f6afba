// ANSI escape sequences → styled segments. Only SGR (colours and text
// attributes) is rendered; every other escape (cursor moves, erases,
// window titles, hyperlinks' framing) is dropped, and a carriage return
// starts the line over, as a progress bar redrawn in a terminal ends up.

// Matches, in order: CSI sequences (ESC [ params final), OSC sequences
// (ESC ] ... BEL or ESC \), other two-byte escapes, carriage returns and
// the remaining C0 controls except tab.
const escRE = /\x1b\[([0-9;:?<=>]*)[ -\/]*([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\|$)|\x1b[@-_]?|\r|[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f]/g;

const cube = [0, 95, 135, 175, 215, 255];
const hex2 = n => n.toString(16).padStart(2, '0');

// color256 is the hex of xterm colour n (16..255); 0..15 stay palette
// indexes so the stylesheet can theme them.
function color256(n) {
  if (n < 16) return n;
  if (n < 232) {
    n -= 16;
    return '#' + hex2(cube[Math.floor(n / 36)]) + hex2(cube[Math.floor(n / 6) % 6]) + hex2(cube[n % 6]);
  }
  const g = 8 + 10 * (n - 232);
  return '#' + hex2(g) + hex2(g) + hex2(g);
}

// Style is the SGR state: fg/bg are undefined (default), 0..15 (palette)
// or '#rrggbb'.
function applySGR(st, params) {
  const p = params === '' ? [0] : params.split(/[;:]/).map(x => (x === '' ? 0 : parseInt(x, 10)));
  for (let i = 0; i < p.length; i++) {
    const c = p[i];
    if (c === 0) st = {};
    else if (c === 1) st.b = true;
    else if (c === 2) st.d = true;
    else if (c === 3) st.i = true;
    else if (c === 4) st.u = true;
    else if (c === 7) st.inv = true;
    else if (c === 9) st.s = true;
    else if (c === 21 || c === 22) { delete st.b; delete st.d; }
    else if (c === 23) delete st.i;
    else if (c === 24) delete st.u;
    else if (c === 27) delete st.inv;
    else if (c === 29) delete st.s;
    else if (c >= 30 && c <= 37) st.fg = c - 30;
    else if (c === 39) delete st.fg;
    else if (c >= 40 && c <= 47) st.bg = c - 40;
    else if (c === 49) delete st.bg;
    else if (c >= 90 && c <= 97) st.fg = c - 90 + 8;
    else if (c >= 100 && c <= 107) st.bg = c - 100 + 8;
    else if (c === 38 || c === 48) {
      const key = c === 38 ? 'fg' : 'bg';
      if (p[i + 1] === 5 && i + 2 < p.length) {
        const n = p[i + 2];
        if (n >= 0 && n <= 255) st[key] = color256(n);
        i += 2;
      } else if (p[i + 1] === 2 && i + 4 < p.length) {
        const [r, g, b] = [p[i + 2], p[i + 3], p[i + 4]].map(v => Math.max(0, Math.min(255, v | 0)));
        st[key] = '#' + hex2(r) + hex2(g) + hex2(b);
        i += 4;
      } else {
        i = p.length; // malformed extended colour: ignore the rest
      }
    }
  }
  return st;
}

// parse splits one line of text into segments {text, style}; style is
// null for unstyled text. Adjacent segments of equal style are merged.
export function parse(line) {
  const out = [];
  let st = {};
  let last = 0;
  const push = text => {
    if (!text) return;
    const style = Object.keys(st).length ? { ...st } : null;
    const prev = out[out.length - 1];
    if (prev && sameStyle(prev.style, style)) prev.text += text;
    else out.push({ text, style });
  };
  escRE.lastIndex = 0;
  for (let m; (m = escRE.exec(line));) {
    push(line.slice(last, m.index));
    last = escRE.lastIndex;
    if (m[0] === '\r') {
      if (last < line.length) out.length = 0; // a trailing CR overwrites nothing
    }
    else if (m[2] === 'm') st = applySGR({ ...st }, m[1]);
  }
  push(line.slice(last));
  return out;
}

function sameStyle(a, b) {
  if (a === b) return true;
  if (!a || !b) return false;
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every(k => a[k] === b[k]);
}

// strip returns the text a terminal would show, without styling.
export function strip(line) {
  if (!/[\x00-\x08\x0b-\x1f\x7f]/.test(line)) return line;
  let s = '';
  for (const seg of parse(line)) s += seg.text;
  return s;
}

// styleSpan applies a segment's style to a span: palette colours and
// attributes as classes (themed by the stylesheet), 256/true colours
// through the CSSOM (allowed by the page's CSP, unlike style attributes).
export function styleSpan(span, style) {
  let fg = style.fg, bg = style.bg;
  if (style.inv) {
    [fg, bg] = [bg === undefined ? 'bg' : bg, fg === undefined ? 'fg' : fg];
  }
  const cls = [];
  if (typeof fg === 'number') cls.push('a-f' + fg);
  else if (fg === 'bg') cls.push('a-fbg');
  else if (fg) span.style.color = fg;
  if (typeof bg === 'number') cls.push('a-b' + bg);
  else if (bg === 'fg') cls.push('a-bfg');
  else if (bg) span.style.backgroundColor = bg;
  if (style.b) cls.push('a-bold');
  if (style.d) cls.push('a-dim');
  if (style.i) cls.push('a-italic');
  if (style.u) cls.push('a-underline');
  if (style.s) cls.push('a-strike');
  span.className = cls.join(' ');
}
