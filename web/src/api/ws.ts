// The WebSocket client: JSON messages `{type, data}`; reconnects with back-off when the connection is
// lost, and reports its state so the editor can show a banner.

import type { ServerMessage } from './types';
import { url } from './client';

export type ConnState = 'connecting' | 'open' | 'closed';

export interface WsOptions {
  clientId: string;
  onMessage: (m: ServerMessage) => void;
  onState: (s: ConnState, detail?: { retryInMs?: number }) => void;
  /** for tests */
  factory?: (u: string) => WebSocket;
}

export class ServerSocket {
  private ws: WebSocket | null = null;
  private retries = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;

  constructor(private readonly opts: WsOptions) {}

  get wsUrl(): string {
    const loc = window.location;
    const proto = loc.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${proto}//${loc.host}${url(`/api/v1/ws?clientId=${encodeURIComponent(this.opts.clientId)}`)}`;
  }

  start(): void {
    this.stopped = false;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.ws?.close();
    this.ws = null;
  }

  /** Try again now (the banner's "Reconnect" button). */
  reconnect(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.retries = 0;
    if (this.ws && this.ws.readyState <= 1) return;
    this.connect();
  }

  private connect(): void {
    if (this.stopped) return;
    this.opts.onState('connecting');
    let ws: WebSocket;
    try {
      ws = this.opts.factory ? this.opts.factory(this.wsUrl) : new WebSocket(this.wsUrl);
    } catch {
      this.schedule();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.retries = 0;
      this.opts.onState('open');
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return; // binary frames are ComfyUI's preview format
      try {
        const m = JSON.parse(ev.data) as ServerMessage;
        if (m && typeof m.type === 'string') this.opts.onMessage({ type: m.type, data: m.data ?? {} });
      } catch {
        // ignore a malformed message
      }
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.schedule();
    };
    ws.onerror = () => {
      // onclose follows
    };
  }

  private schedule(): void {
    if (this.stopped) return;
    const delay = Math.min(10000, 500 * 2 ** this.retries);
    this.retries += 1;
    this.opts.onState('closed', { retryInMs: delay });
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, delay);
  }
}
