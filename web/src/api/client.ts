// The HTTP client for the native API (docs/API.md). Every error becomes an ApiError with the server's
// message, so the editor can show it as is.

import type {
  Catalog, FileRef, GraphErrorInfo, LibraryItem, NodeOutputs, RunRecord, RunSummary, Workflow,
} from './types';

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly body: unknown = null,
  ) {
    super(message);
  }

  /** Node errors attached to a 400 answer (`errors: [{node_id, input, code, message}]`). */
  get errors(): GraphErrorInfo[] {
    const b = this.body as { errors?: GraphErrorInfo[] } | null;
    return Array.isArray(b?.errors) ? b!.errors : [];
  }
}

export const API = '/api/v1';

function base(): string {
  // served at the site root, or under a prefix when behind a proxy: API paths stay relative to the page
  const p = window.location.pathname.replace(/[^/]*$/, '');
  return p.replace(/\/$/, '');
}

export function url(path: string): string {
  return base() + path;
}

async function request<T>(method: string, path: string, body?: unknown, init: RequestInit = {}): Promise<T> {
  const headers: Record<string, string> = {};
  let payload: BodyInit | undefined;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  let res: Response;
  try {
    res = await fetch(url(path), { method, headers, body: payload, ...init });
  } catch (e) {
    throw new ApiError(`cannot reach the server (${(e as Error).message})`, 0);
  }
  const text = await res.text();
  let data: unknown = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!res.ok) {
    const err = (data as { error?: { message?: string } } | null)?.error;
    throw new ApiError(err?.message ?? `${method} ${path}: HTTP ${res.status}`, res.status, data);
  }
  return data as T;
}

const enc = encodeURIComponent;
const encPath = (p: string) => p.split('/').map(enc).join('/');

export const api = {
  catalog: () => request<Catalog>('GET', `${API}/nodes`),
  validate: (workflow: Workflow) =>
    request<{ valid: boolean; errors: GraphErrorInfo[] }>('POST', `${API}/validate`, { workflow }),
  run: (workflow: Workflow, clientId: string, runId: string, outputs?: string[]) =>
    request<{ run_id: string; number: number }>('POST', `${API}/runs`, {
      workflow, client_id: clientId, run_id: runId, ...(outputs ? { outputs } : {}),
    }),
  getRun: (runId: string) => request<RunRecord>('GET', `${API}/runs/${enc(runId)}`),
  queue: () => request<{ running: RunSummary[]; pending: RunSummary[] }>('GET', `${API}/queue`),
  cancel: (runId: string) => request<{ cancelled: boolean }>('DELETE', `${API}/queue/${enc(runId)}`),
  clearQueue: () => request<{ cancelled: number }>('DELETE', `${API}/queue`),
  interrupt: (runId?: string) => request<unknown>('POST', `${API}/interrupt`, runId ? { run_id: runId } : {}),
  history: (offset = 0, limit = 50) =>
    request<{ items: RunRecord[]; total: number }>('GET', `${API}/history?offset=${offset}&limit=${limit}`),
  deleteHistory: (runId: string) => request<unknown>('DELETE', `${API}/history/${enc(runId)}`),
  nodeOutputs: (runId: string, nodeId: string) =>
    request<NodeOutputs>('GET', `${API}/runs/${enc(runId)}/nodes/${encPath(nodeId)}`),
  upload: (file: File, kind: 'image' | 'mask' = 'image') => {
    const fd = new FormData();
    fd.append('image', file, file.name);
    fd.append('kind', kind);
    fd.append('overwrite', 'true');
    return request<{ name: string; subfolder: string; type: string }>('POST', `${API}/upload`, fd);
  },
  /** A ComfyUI API prompt translated as POST /prompt would run it (input renames, sampler names). */
  fromComfy: (prompt: Record<string, unknown>) =>
    request<{ workflow: Workflow; warnings?: string[] }>('POST', `${API}/convert/comfy`, { prompt }),
  /** A ComfyUI editor (LiteGraph) workflow, rebuilt into its API prompt on the server and translated the same way
   * (widget values by ComfyUI's widget order, Reroutes and PrimitiveNodes resolved); positions in `ui.pos`. */
  fromComfyWorkflow: (workflow: Record<string, unknown>) =>
    request<{ workflow: Workflow; warnings?: string[] }>('POST', `${API}/convert/comfy`, { workflow }),
  library: () => request<{ items: LibraryItem[] }>('GET', `${API}/workflows`),
  loadWorkflow: (path: string) => request<unknown>('GET', `${API}/workflows/${encPath(path)}`),
  saveWorkflow: (path: string, wf: Workflow) => request<{ path: string }>('PUT', `${API}/workflows/${encPath(path)}`, wf),
  deleteWorkflow: (path: string) => request<unknown>('DELETE', `${API}/workflows/${encPath(path)}`),
};

export function viewUrl(f: FileRef): string {
  return url(`${API}/view?filename=${enc(f.filename)}&subfolder=${enc(f.subfolder ?? '')}&type=${enc(f.type ?? 'output')}`);
}

/** preview_url from the server is absolute-path; keep it relative to where the editor is served. */
export function serverUrl(path: string): string {
  return path.startsWith('/') ? url(path) : path;
}
