// Shapes of the server's contract (docs/API.md) and of the workflow file (engine/workflow.py).

export interface SocketTypeInfo {
  name: string;
  color: string;
  supertypes: string[];
  description: string;
}

export interface InputSchema {
  name: string;
  type: string;
  required: boolean;
  link_only: boolean;
  default: unknown;
  min: number | null;
  max: number | null;
  step: number | null;
  choices: unknown[] | null;
  description: string;
  display_name: string;
  multiline: boolean;
  slider: boolean;
  seed: boolean;
  upload: string | null;
  advanced: boolean;
}

export interface OutputSchema {
  name: string;
  type: string;
  description: string;
}

export interface LoopSchema {
  body_inputs: OutputSchema[];
  body_outputs: InputSchema[];
  default_body: WorkflowBody;
}

export interface NodeSchema {
  name: string;
  display_name: string;
  category: string;
  description: string;
  inputs: InputSchema[];
  outputs: OutputSchema[];
  output_node: boolean;
  deterministic: boolean;
  aliases: string[];
  loop: LoopSchema | null;
}

export interface Catalog {
  types: SocketTypeInfo[];
  nodes: Record<string, NodeSchema>;
}

// ---- workflow file -------------------------------------------------------------------------------

export interface WorkflowLink {
  node: string;
  output: string;
}

export interface WorkflowNode {
  type: string;
  inputs?: Record<string, unknown>;
  mode?: 'normal' | 'bypass';
  body?: WorkflowBody | null;
  ui?: Record<string, unknown>;
}

export interface WorkflowBody {
  nodes: Record<string, WorkflowNode>;
  ui?: Record<string, unknown>;
}

export interface Workflow {
  format: 'latentloom.workflow';
  version: number;
  nodes: Record<string, WorkflowNode>;
  settings?: Record<string, unknown>;
  ui?: Record<string, unknown>;
}

// ---- runs ----------------------------------------------------------------------------------------

export interface FileRef {
  filename: string;
  subfolder: string;
  type: 'output' | 'temp' | 'input';
}

export interface GraphErrorInfo {
  node_id: string | null;
  input: string | null;
  code: string;
  message: string;
}

export type RunStatus = 'queued' | 'running' | 'success' | 'error' | 'interrupted' | 'cancelled';

export interface RunRecord {
  run_id: string;
  number: number;
  status: RunStatus;
  workflow?: Workflow;
  client_id: string | null;
  created: number | string | null;
  started: number | string | null;
  finished: number | string | null;
  nodes: Record<string, { status: string; cached: boolean; seconds: number | null }>;
  outputs: Record<string, { images?: FileRef[] }>;
  error: { node_id: string | null; node_type: string | null; error_type: string; message: string } | null;
}

export interface RunSummary {
  run_id: string;
  number: number;
  status: RunStatus;
  created: number | string | null;
  client_id: string | null;
  node_count: number;
}

export interface OutputPreview {
  type: string;
  kind: 'image' | 'latent' | 'tensor' | 'value' | 'handle';
  summary: { shape?: number[]; dtype?: string; min?: number; max?: number; mean?: number; device?: string } | null;
  value: unknown;
  preview_url: string | null;
}

export interface NodeOutputs {
  node_id: string;
  available: boolean;
  outputs: Record<string, OutputPreview>;
}

export interface LibraryItem {
  path: string;
  source: 'builtin' | 'user';
  modified: number | string | null;
}

export interface ServerMessage {
  type: string;
  data: Record<string, unknown>;
}
