// Anything a user may open (our workflow JSON, a ComfyUI API prompt or LiteGraph workflow, a PNG with
// embedded text chunks) -> our workflow, with warnings about what could not be translated.

import type { Workflow } from '../api/types';
import type { NodeCatalog } from './catalog';
import { comfyPromptToWorkflow, isComfyPrompt, isLiteGraphWorkflow, liteGraphPositions, liteGraphToWorkflow, unwrapPrompt } from './comfy';
import { FORMAT, isPlainObject } from './convert';

export interface Imported {
  workflow: Workflow;
  warnings: string[];
  origin: 'latentloom' | 'comfyui-api' | 'comfyui';
  /** a ComfyUI API prompt, for the server's exact translation (the local one maps class names only) */
  prompt?: Record<string, unknown>;
  /** a ComfyUI editor (LiteGraph) workflow, for the server's exact translation (widget order, Reroutes, PrimitiveNodes) */
  litegraph?: Record<string, unknown>;
}

export class ImportError extends Error {}

export function importJson(data: unknown, catalog: NodeCatalog): Imported {
  if (isPlainObject(data) && data.format === FORMAT) return { workflow: data as unknown as Workflow, warnings: [], origin: 'latentloom' };
  if (isPlainObject(data) && 'format' in data) {
    throw new ImportError(`not a Latent Loom workflow: 'format' is ${JSON.stringify(data.format)}`);
  }
  if (isComfyPrompt(data)) return { ...comfyPromptToWorkflow(data, catalog), origin: 'comfyui-api', prompt: unwrapPrompt(data) };
  if (isLiteGraphWorkflow(data)) return { ...liteGraphToWorkflow(data, catalog), origin: 'comfyui', litegraph: data as Record<string, unknown> };
  throw new ImportError('this JSON is neither a Latent Loom workflow nor a ComfyUI workflow or API prompt');
}

function parse(text: string | undefined): unknown {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export function importPngText(chunks: Record<string, string>, catalog: NodeCatalog): Imported {
  const wf = parse(chunks.workflow);
  const prompt = parse(chunks.prompt);
  if (isPlainObject(wf) && wf.format === FORMAT) return { workflow: wf as unknown as Workflow, warnings: [], origin: 'latentloom' };
  if (isComfyPrompt(prompt)) {
    const pos = isLiteGraphWorkflow(wf) ? liteGraphPositions(wf) : {};
    return { ...comfyPromptToWorkflow(prompt, catalog, pos), origin: 'comfyui-api', prompt: unwrapPrompt(prompt) };
  }
  if (isLiteGraphWorkflow(wf)) return { ...liteGraphToWorkflow(wf, catalog), origin: 'comfyui', litegraph: wf as Record<string, unknown> };
  if (isPlainObject(prompt) && prompt.format === FORMAT) return { workflow: prompt as unknown as Workflow, warnings: [], origin: 'latentloom' };
  throw new ImportError(
    Object.keys(chunks).length
      ? `this PNG has text chunks (${Object.keys(chunks).join(', ')}) but no workflow in them`
      : 'this PNG holds no workflow (no "workflow" or "prompt" text chunk)',
  );
}
