/**
 * The chest X-ray document viewer: the image's own values windowed in the browser.
 *
 * Left-drag changes the window (horizontal: width, vertical: level), the wheel
 * zooms around the cursor, Shift-drag (or the middle/right button) pans. When
 * zoomed past the overview's resolution the visible region is fetched at full
 * resolution from the server. Keys (only while the viewer has focus): r reset,
 * i invert, f fit, 1 = 1:1, 0..3 presets, ? help.
 */
import { Widget } from '@lumino/widgets';

import { IImageInfo, IPixels, imageInfo, pixels } from './api';

/** Longest side of the overview fetched first. */
const OVERVIEW_SIDE = 1024;
const MAX_ZOOM = 16;

interface IWindow {
  center: number;
  width: number;
}

interface IPreset {
  label: string;
  window: () => IWindow;
}

export class CxrViewer extends Widget {
  constructor(path: string, onReport: (path: string) => void) {
    super();
    this.path = path;
    this.addClass('cxr-Viewer');
    this.node.tabIndex = 0;
    this.node.setAttribute('role', 'application');
    this.node.setAttribute('aria-label', `Chest X-ray viewer: ${path}`);

    this.header = document.createElement('div');
    this.header.className = 'cxr-Viewer-header';
    this.toolbar = document.createElement('div');
    this.toolbar.className = 'cxr-Viewer-toolbar';
    this.stage = document.createElement('div');
    this.stage.className = 'cxr-Viewer-stage';
    this.canvas = document.createElement('canvas');
    this.canvas.className = 'cxr-Viewer-canvas';
    this.stage.appendChild(this.canvas);
    this.status = document.createElement('div');
    this.status.className = 'cxr-Viewer-status';
    this.status.setAttribute('aria-live', 'polite');
    this.help = document.createElement('div');
    this.help.className = 'cxr-Viewer-help';
    this.help.hidden = true;
    this.help.textContent =
      'Drag: window/level (horizontal width, vertical level) · Wheel: zoom · Shift-drag or right-drag: pan · ' +
      'Keys: r reset, i invert, f fit, 1 one-to-one, 0-3 presets, ? this help';
    this.node.append(this.header, this.toolbar, this.stage, this.status, this.help);

    this.presetSelect = document.createElement('select');
    this.presetSelect.setAttribute('aria-label', 'Window preset');
    this.presetSelect.className = 'cxr-Viewer-preset';
    this.presetSelect.onchange = () => this.applyPreset(Number(this.presetSelect.value));
    const button = (label: string, title: string, action: () => void) => {
      const b = document.createElement('button');
      b.className = 'jp-Button jp-mod-styled cxr-Viewer-button';
      b.textContent = label;
      b.title = title;
      b.onclick = action;
      this.toolbar.appendChild(b);
      return b;
    };
    this.toolbar.appendChild(this.presetSelect);
    this.invertButton = button('Invert', 'Invert (i)', () => this.toggleInvert());
    button('Fit', 'Fit the image (f)', () => this.fit());
    button('1:1', 'One image pixel per screen pixel (1)', () => this.oneToOne());
    button('Reset', 'Window, zoom and invert as opened (r)', () => this.reset());
    button('?', 'Keys and mouse', () => (this.help.hidden = !this.help.hidden));
    const report = button('Report…', 'A notebook with ReportGenWidget on this study', () =>
      onReport(this.path)
    );
    report.classList.add('cxr-Viewer-report');
    this.windowText = document.createElement('span');
    this.windowText.className = 'cxr-Viewer-window';
    this.toolbar.appendChild(this.windowText);

    this.canvas.addEventListener('pointerdown', e => this.onPointerDown(e));
    this.canvas.addEventListener('pointermove', e => this.onPointerMove(e));
    this.canvas.addEventListener('pointerup', e => this.onPointerUp(e));
    this.canvas.addEventListener('wheel', e => this.onWheel(e), { passive: false });
    this.canvas.addEventListener('contextmenu', e => e.preventDefault());
    this.node.addEventListener('keydown', e => this.onKey(e));
    void this.load();
  }

  readonly path: string;
  /** The current window in the image's own values (for tests and the status line). */
  window: IWindow = { center: 0, width: 1 };
  invert = false;
  zoom = 1;
  /** Image pixel shown at the canvas's top-left corner. */
  origin = { x: 0, y: 0 };
  info: IImageInfo | null = null;
  /** Detail requests answered (for tests). */
  detailLoads = 0;

  private header: HTMLDivElement;
  private toolbar: HTMLDivElement;
  private stage: HTMLDivElement;
  private canvas: HTMLCanvasElement;
  private status: HTMLDivElement;
  private help: HTMLDivElement;
  private presetSelect: HTMLSelectElement;
  private invertButton: HTMLButtonElement;
  private windowText: HTMLSpanElement;
  private overview: IPixels | null = null;
  private detail: IPixels | null = null;
  private overviewCanvas = document.createElement('canvas');
  private detailCanvas = document.createElement('canvas');
  private presets: IPreset[] = [];
  private drag: { x: number; y: number; mode: 'window' | 'pan'; start: IWindow; origin: { x: number; y: number } } | null = null;
  private detailTimer = 0;
  private resizeObserver: ResizeObserver | null = null;

  private async load(): Promise<void> {
    this.status.textContent = 'Loading…';
    try {
      this.info = await imageInfo(this.path);
      this.overview = await pixels(this.path, OVERVIEW_SIDE);
    } catch (error) {
      this.status.textContent = `Cannot show ${this.path}: ${(error as Error).message}`;
      this.node.dataset.state = 'error';
      return;
    }
    this.showHeader();
    this.buildPresets();
    this.reset();
    this.resizeObserver = new ResizeObserver(() => this.fit());
    this.resizeObserver.observe(this.stage);
    this.node.dataset.state = 'ready';
    this.status.textContent =
      'Drag: window/level · Wheel: zoom · Shift-drag: pan · Hover: value under the cursor';
  }

  dispose(): void {
    this.resizeObserver?.disconnect();
    super.dispose();
  }

  private showHeader(): void {
    const info = this.info!;
    const m = info.metadata;
    const parts = [
      `${info.width} × ${info.height}`,
      `${info.bit_depth}-bit`,
      m.modality ? String(m.modality) : '',
      m.view_position ? `view ${m.view_position}` : '',
      m.photometric_interpretation ? String(m.photometric_interpretation) : '',
      info.spacing
        ? `spacing ${info.spacing[0].toFixed(3)} × ${info.spacing[1].toFixed(3)} mm`
        : 'pixel spacing unknown',
      info.window ? `file window ${fmt(info.window[0])}/${fmt(info.window[1])}` : 'no window in the file'
    ].filter(Boolean);
    this.header.textContent = `${this.path} · ${parts.join(' · ')}`;
    if (info.notes.length) {
      this.header.title = info.notes.join('\n');
    }
  }

  private buildPresets(): void {
    const info = this.info!;
    const [lo, hi] = info.value_range;
    const percentiles = percentileWindow(this.overview!.codes, info, 0.01, 0.99);
    this.presets = [
      { label: 'File window', window: () => toWindow(info.default_window) },
      { label: 'Full range', window: () => ({ center: (lo + hi) / 2, width: Math.max(hi - lo, 1) }) },
      { label: 'Percentile 1–99 %', window: () => percentiles }
    ];
    this.presetSelect.replaceChildren(
      ...this.presets.map((p, i) => {
        const option = document.createElement('option');
        option.value = String(i);
        option.textContent = p.label;
        return option;
      })
    );
  }

  applyPreset(index: number): void {
    const preset = this.presets[index];
    if (!preset) {
      return;
    }
    this.presetSelect.value = String(index);
    this.setWindow(preset.window());
  }

  setWindow(window: IWindow): void {
    this.window = { center: window.center, width: Math.max(window.width, 1e-6) };
    this.renderOverview();
    if (this.detail) {
      this.renderDetail();
    }
    this.draw();
  }

  toggleInvert(): void {
    this.invert = !this.invert;
    this.invertButton.setAttribute('aria-pressed', String(this.invert));
    this.setWindow(this.window);
  }

  reset(): void {
    this.invert = false;
    this.invertButton.setAttribute('aria-pressed', 'false');
    this.applyPreset(0);
    this.fit();
  }

  fit(): void {
    if (!this.info) {
      return;
    }
    this.resizeCanvas();
    const { width, height } = this.canvas;
    this.zoom = Math.min(width / this.info.width, height / this.info.height);
    this.origin = {
      x: (this.info.width - width / this.zoom) / 2,
      y: (this.info.height - height / this.zoom) / 2
    };
    this.viewChanged();
  }

  oneToOne(): void {
    this.zoomAround(1, this.canvas.width / 2, this.canvas.height / 2);
  }

  private resizeCanvas(): void {
    const rect = this.stage.getBoundingClientRect();
    this.canvas.width = Math.max(1, Math.floor(rect.width));
    this.canvas.height = Math.max(1, Math.floor(rect.height));
  }

  private lut(): Uint8Array {
    const info = this.info!;
    const { offset, step } = info.mapping;
    const low = this.window.center - this.window.width / 2;
    const invert = info.invert !== this.invert;
    const table = new Uint8Array(65536);
    for (let u = 0; u < 65536; u++) {
      let g = ((offset + step * u - low) / this.window.width) * 255;
      g = g < 0 ? 0 : g > 255 ? 255 : g;
      table[u] = invert ? 255 - g : g;
    }
    return table;
  }

  private paint(target: HTMLCanvasElement, source: IPixels, table: Uint8Array): void {
    target.width = source.width;
    target.height = source.height;
    const context = target.getContext('2d')!;
    const image = context.createImageData(source.width, source.height);
    const data = image.data;
    const codes = source.codes;
    for (let i = 0, j = 0; i < codes.length; i++, j += 4) {
      const g = table[codes[i]];
      data[j] = data[j + 1] = data[j + 2] = g;
      data[j + 3] = 255;
    }
    context.putImageData(image, 0, 0);
  }

  private renderOverview(): void {
    this.paint(this.overviewCanvas, this.overview!, this.lut());
    this.windowText.textContent = `W ${fmt(this.window.width)} L ${fmt(this.window.center)}${
      this.invert ? ' inverted' : ''
    }`;
    this.node.dataset.window = `${this.window.center},${this.window.width}`;
  }

  private renderDetail(): void {
    this.paint(this.detailCanvas, this.detail!, this.lut());
  }

  private draw(): void {
    const context = this.canvas.getContext('2d')!;
    context.setTransform(1, 0, 0, 1, 0, 0);
    context.fillStyle = '#000';
    context.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.overview || !this.info) {
      return;
    }
    context.imageSmoothingEnabled = this.zoom < 1;
    const z = this.zoom;
    context.setTransform(z, 0, 0, z, -this.origin.x * z, -this.origin.y * z);
    context.drawImage(this.overviewCanvas, 0, 0, this.info.width, this.info.height);
    if (this.detail) {
      const [x, y, w, h] = this.detail.box;
      context.drawImage(this.detailCanvas, x, y, w, h);
    }
    this.node.dataset.zoom = String(this.zoom);
    this.node.dataset.origin = `${this.origin.x},${this.origin.y}`;
  }

  private viewChanged(): void {
    this.draw();
    window.clearTimeout(this.detailTimer);
    const overviewScale = this.overview ? this.overview.scale : 1;
    if (this.zoom > overviewScale * 1.01) {
      this.detailTimer = window.setTimeout(() => void this.fetchDetail(), 120);
    } else if (this.detail) {
      this.detail = null;
      this.draw();
    }
  }

  private async fetchDetail(): Promise<void> {
    const info = this.info!;
    const w = this.canvas.width / this.zoom;
    const h = this.canvas.height / this.zoom;
    const region: [number, number, number, number] = [
      Math.max(0, Math.floor(this.origin.x)),
      Math.max(0, Math.floor(this.origin.y)),
      Math.min(info.width, Math.ceil(w) + 2),
      Math.min(info.height, Math.ceil(h) + 2)
    ];
    const side = Math.max(this.canvas.width, this.canvas.height);
    const wanted = `${region}|${this.zoom}`;
    this.pendingDetail = wanted;
    try {
      const detail = await pixels(this.path, side, region);
      if (this.pendingDetail !== wanted) {
        return;
      }
      this.detail = detail;
      this.detailLoads++;
      this.renderDetail();
      this.draw();
      this.node.dataset.detail = `${detail.box.join(',')}|${detail.scale}`;
    } catch (error) {
      this.status.textContent = `Detail not available: ${(error as Error).message}`;
    }
  }

  private pendingDetail = '';

  /** Zoom to ``zoom`` keeping the image point under canvas point (cx, cy) in place. */
  zoomAround(zoom: number, cx: number, cy: number): void {
    const z = Math.min(MAX_ZOOM, Math.max(0.05, zoom));
    const ix = this.origin.x + cx / this.zoom;
    const iy = this.origin.y + cy / this.zoom;
    this.zoom = z;
    this.origin = { x: ix - cx / z, y: iy - cy / z };
    this.viewChanged();
  }

  private canvasPoint(e: MouseEvent): { x: number; y: number } {
    const rect = this.canvas.getBoundingClientRect();
    return { x: e.clientX - rect.left, y: e.clientY - rect.top };
  }

  private onWheel(e: WheelEvent): void {
    e.preventDefault();
    const p = this.canvasPoint(e);
    this.zoomAround(this.zoom * Math.exp(-e.deltaY * 0.0015), p.x, p.y);
  }

  private onPointerDown(e: PointerEvent): void {
    this.node.focus();
    const pan = e.shiftKey || e.button === 1 || e.button === 2;
    this.drag = {
      x: e.clientX,
      y: e.clientY,
      mode: pan ? 'pan' : 'window',
      start: { ...this.window },
      origin: { ...this.origin }
    };
    this.canvas.setPointerCapture(e.pointerId);
  }

  private onPointerMove(e: PointerEvent): void {
    const drag = this.drag;
    if (!drag) {
      this.probe(e);
      return;
    }
    const dx = e.clientX - drag.x;
    const dy = e.clientY - drag.y;
    if (drag.mode === 'pan') {
      this.origin = { x: drag.origin.x - dx / this.zoom, y: drag.origin.y - dy / this.zoom };
      this.draw();
      return;
    }
    const [lo, hi] = this.info!.value_range;
    const unit = Math.max(hi - lo, 1) / 500;
    this.setWindow({ center: drag.start.center + dy * unit, width: drag.start.width + dx * unit });
  }

  private onPointerUp(e: PointerEvent): void {
    if (this.drag?.mode === 'pan') {
      this.viewChanged();
    }
    this.drag = null;
    this.canvas.releasePointerCapture(e.pointerId);
  }

  /** The stored value under the cursor (exact from the detail, else the overview's average). */
  private probe(e: MouseEvent): void {
    if (!this.info || !this.overview) {
      return;
    }
    const p = this.canvasPoint(e);
    const x = Math.floor(this.origin.x + p.x / this.zoom);
    const y = Math.floor(this.origin.y + p.y / this.zoom);
    if (x < 0 || y < 0 || x >= this.info.width || y >= this.info.height) {
      this.status.textContent = '';
      return;
    }
    const { offset, step } = this.info.mapping;
    let code: number;
    let exact = false;
    const d = this.detail;
    if (d && x >= d.box[0] && y >= d.box[1] && x < d.box[0] + d.box[2] && y < d.box[1] + d.box[3]) {
      const dx = Math.min(d.width - 1, Math.floor((x - d.box[0]) * d.scale));
      const dy = Math.min(d.height - 1, Math.floor((y - d.box[1]) * d.scale));
      code = d.codes[dy * d.width + dx];
      exact = d.scale >= 1;
    } else {
      const o = this.overview;
      const ox = Math.min(o.width - 1, Math.floor(x * o.scale));
      const oy = Math.min(o.height - 1, Math.floor(y * o.scale));
      code = o.codes[oy * o.width + ox];
      exact = o.scale >= 1;
    }
    const value = offset + step * code;
    this.status.textContent = `x ${x}, y ${y}: ${exact ? '' : '≈ '}${fmt(value)}`;
  }

  private onKey(e: KeyboardEvent): void {
    const actions: Record<string, () => void> = {
      r: () => this.reset(),
      i: () => this.toggleInvert(),
      f: () => this.fit(),
      '1': () => this.oneToOne(),
      '?': () => (this.help.hidden = !this.help.hidden),
      '0': () => this.applyPreset(0)
    };
    if (e.key === '2' || e.key === '3') {
      actions[e.key] = () => this.applyPreset(Number(e.key) - 1);
    }
    const action = actions[e.key];
    if (action && !e.ctrlKey && !e.metaKey && !e.altKey) {
      action();
      // Handled here: JupyterLab's own shortcuts must not see it.
      e.preventDefault();
      e.stopPropagation();
    }
  }
}

function toWindow(pair: [number, number]): IWindow {
  return { center: pair[0], width: pair[1] };
}

/** A window spanning the given percentiles of the overview's values. */
function percentileWindow(codes: Uint16Array, info: IImageInfo, low: number, high: number): IWindow {
  const histogram = new Uint32Array(65536);
  for (let i = 0; i < codes.length; i++) {
    histogram[codes[i]]++;
  }
  const find = (fraction: number) => {
    const target = fraction * codes.length;
    let seen = 0;
    for (let u = 0; u < 65536; u++) {
      seen += histogram[u];
      if (seen >= target) {
        return u;
      }
    }
    return 65535;
  };
  const { offset, step } = info.mapping;
  const a = offset + step * find(low);
  const b = offset + step * find(high);
  return { center: (a + b) / 2, width: Math.max(b - a, 1) };
}

function fmt(value: number): string {
  return Math.abs(value) >= 100 ? value.toFixed(0) : value.toPrecision(4);
}
