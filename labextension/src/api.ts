/** Calls to the cxr-widgets server extension, with the server's own authentication. */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

const settings = ServerConnection.makeSettings();

export interface IImageInfo {
  path: string;
  width: number;
  height: number;
  bit_depth: number;
  invert: boolean;
  window: [number, number] | null;
  default_window: [number, number];
  value_range: [number, number];
  mapping: { offset: number; step: number };
  spacing: [number, number] | null;
  metadata: Record<string, unknown>;
  notes: string[];
  codec: string;
  overview_scale: number;
}

export interface IPixels {
  width: number;
  height: number;
  scale: number;
  box: [number, number, number, number];
  codes: Uint16Array;
}

function url(route: string, query: Record<string, string | number> = {}): string {
  const search = Object.entries(query)
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
    .join('&');
  const base = URLExt.join(settings.baseUrl, 'cxr-widgets', 'api', route);
  return search ? `${base}?${search}` : base;
}

async function send(route: string, init: RequestInit, query = {}): Promise<Response> {
  const response = await ServerConnection.makeRequest(url(route, query), init, settings);
  if (!response.ok) {
    let message = response.statusText;
    try {
      message = (await response.json()).message || message;
    } catch {
      /* not JSON */
    }
    throw new Error(message);
  }
  return response;
}

export async function imageInfo(path: string): Promise<IImageInfo> {
  return (await send('image', { method: 'GET' }, { path })).json();
}

/** Undo the server's zlib-delta packing: inflate, interleave byte planes, running sum per row. */
export async function decodeZlibDelta(
  data: ArrayBuffer,
  width: number,
  height: number
): Promise<Uint16Array> {
  const stream = new Blob([data]).stream().pipeThrough(new DecompressionStream('deflate'));
  const planes = new Uint8Array(await new Response(stream).arrayBuffer());
  const n = width * height;
  const codes = new Uint16Array(n);
  for (let y = 0; y < height; y++) {
    let running = 0;
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      running = (running + (planes[i] | (planes[n + i] << 8))) & 0xffff;
      codes[i] = running;
    }
  }
  return codes;
}

export async function pixels(
  path: string,
  maxSide: number,
  region?: [number, number, number, number]
): Promise<IPixels> {
  const query: Record<string, string | number> = { path, max_side: Math.round(maxSide) };
  if (region) {
    [query.x, query.y, query.w, query.h] = region.map(v => Math.round(v));
  }
  const response = await send('pixels', { method: 'GET' }, query);
  const width = Number(response.headers.get('X-Cxr-Width'));
  const height = Number(response.headers.get('X-Cxr-Height'));
  const scale = Number(response.headers.get('X-Cxr-Scale'));
  const box = (response.headers.get('X-Cxr-Box') || '0,0,0,0').split(',').map(Number) as [
    number,
    number,
    number,
    number
  ];
  const codes = await decodeZlibDelta(await response.arrayBuffer(), width, height);
  return { width, height, scale, box, codes };
}

export async function newNotebook(paths: string[], dir = ''): Promise<string> {
  const response = await send('notebook', {
    method: 'POST',
    body: JSON.stringify({ paths, dir })
  });
  return (await response.json()).path;
}

export async function copyTutorials(dir: string): Promise<{ copied: string[]; skipped: string[] }> {
  return (await send('tutorials', { method: 'POST', body: JSON.stringify({ dir }) })).json();
}

export async function localEndpoint(
  action?: 'start' | 'stop'
): Promise<{ running: boolean; url: string | null }> {
  const init: RequestInit = action
    ? { method: 'POST', body: JSON.stringify({ action }) }
    : { method: 'GET' };
  return (await send('local-endpoint', init)).json();
}
