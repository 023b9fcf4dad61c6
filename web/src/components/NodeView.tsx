// One node on the canvas: header (title, status), typed sockets coloured per type, widgets for the
// literal inputs, progress, errors, and what the node produced (images, live previews).

import { Handle, type NodeProps, Position, useStore as useFlowStore } from '@xyflow/react';
import { memo, useRef, useState } from 'react';
import { viewUrl } from '../api/client';
import type { GraphErrorInfo, InputSchema, NodeSchema } from '../api/types';
import { unknownSchema } from '../model/catalog';
import type { GNode } from '../model/graph';
import { currentGraph, linkedInputs, loopOwner, nodeErrors, nodeRuns } from '../state/derived';
import { editor } from '../state/editor';
import { useEd } from '../state/hooks';
import type { NodeRun } from '../state/runs';
import { Widget } from './widgets';

export interface LoomNodeData extends Record<string, unknown> {
  id: string;
}


const STATUS_LABEL: Record<string, string> = {
  queued: 'queued',
  running: 'running',
  executed: 'ran',
  cached: 'cached',
  error: 'error',
  interrupted: 'stopped',
};

export const NodeView = memo(function NodeView({ id, selected }: NodeProps) {
  const node = useEd((s) => currentGraph(s).nodes[id]);
  const owner = useEd(loopOwner);
  const catalog = useEd((s) => s.catalog);
  const linked = useEd((s) => linkedInputs(currentGraph(s), id));
  const run = useEd((s) => nodeRuns(s)[id]);
  const errors = useEd((s) => nodeErrors(s)[id]);
  const showAdvanced = useEd((s) => !!s.advanced[id]);
  const [renaming, setRenaming] = useState(false);
  // zoomed far out (big graphs), a node draws only its frame and title: far less DOM to lay out
  const lowDetail = useFlowStore(zoomedOut);
  const fullHeight = useRef<number | null>(null);
  const measuredHeight = useFlowStore((s) => s.nodeLookup.get(id)?.measured.height);
  if (!lowDetail && measuredHeight) fullHeight.current = measuredHeight;
  if (!node) return null;
  const known = catalog.schemaFor(node.type, owner);
  const schema: NodeSchema = known ?? unknownSchema(node, currentGraph(editor.s));
  if (lowDetail) return <LowDetail node={node} schema={schema} status={errors?.length ? 'error' : run?.status} selected={!!selected} height={fullHeight.current} />;
  return (
    <NodeBody
      node={node}
      schema={schema}
      known={!!known}
      linked={linked ? new Set(linked.split(',')) : new Set()}
      run={run}
      errors={errors}
      selected={!!selected}
      showAdvanced={showAdvanced}
      renaming={renaming}
      setRenaming={setRenaming}
    />
  );
});

const zoomedOut = (s: { transform: [number, number, number] }) => s.transform[2] < 0.45;

function LowDetail({ node, schema, status, selected, height }: { node: GNode; schema: NodeSchema; status?: string; selected: boolean; height: number | null }) {
  const types = editor.s.catalog.types;
  const accent = schema.outputs[0] ? types.color(schema.outputs[0].type) : '#78909c';
  const cls = ['ll-node', 'lod', selected && 'selected', node.bypass && 'bypass', status && `st-${status}`].filter(Boolean).join(' ');
  return (
    <div className={cls} data-node-id={node.id} data-status={status ?? ''} style={{ ['--node-accent' as string]: accent, height: node.collapsed ? undefined : height ?? 120 }}>
      <div className="ll-node-header"><span className="ll-title">{node.title ?? schema.display_name}</span></div>
      {schema.inputs.map((i) => (
        <Handle key={i.name} type="target" position={Position.Left} id={`in:${i.name}`} className="ll-socket ll-socket-hidden" />
      ))}
      {schema.outputs.map((o) => (
        <Handle key={o.name} type="source" position={Position.Right} id={`out:${o.name}`} className="ll-socket ll-socket-hidden" />
      ))}
    </div>
  );
}

interface BodyProps {
  node: GNode;
  schema: NodeSchema;
  known: boolean;
  linked: Set<string>;
  run?: NodeRun;
  errors?: GraphErrorInfo[];
  selected: boolean;
  showAdvanced: boolean;
  renaming: boolean;
  setRenaming: (v: boolean) => void;
}

function NodeBody({ node, schema, known, linked, run, errors, selected, showAdvanced, renaming, setRenaming }: BodyProps) {
  const types = editor.s.catalog.types;
  const title = node.title ?? schema.display_name;
  const errorInputs = new Set((errors ?? []).map((e) => e.input).filter(Boolean) as string[]);
  const nodeLevelErrors = (errors ?? []).filter((e) => !e.input);
  const status = errors?.length ? 'error' : run?.status;
  const sockets = schema.inputs.filter((i) => i.link_only);
  const widgets = schema.inputs.filter((i) => !i.link_only);
  const hiddenAdvanced = widgets.filter((i) => i.advanced && !linked.has(i.name) && !errorInputs.has(i.name));
  const shownWidgets = showAdvanced ? widgets : widgets.filter((i) => !hiddenAdvanced.includes(i));
  const seedCtl = (node.ui.seed_control ?? {}) as Record<string, string>;
  const accent = schema.outputs[0] ? types.color(schema.outputs[0].type) : '#78909c';
  const cls = [
    'll-node',
    selected && 'selected',
    node.bypass && 'bypass',
    node.collapsed && 'collapsed',
    status && `st-${status}`,
    !known && 'unknown',
    schema.output_node && 'output-node',
  ].filter(Boolean).join(' ');
  const rows = Math.max(sockets.length, schema.outputs.length);
  const progress = run?.progress && run.progress.max ? Math.min(1, run.progress.value / run.progress.max) : null;

  if (node.collapsed) {
    return (
      <div className={cls} data-node-id={node.id} data-status={status ?? ''} style={{ ['--node-accent' as string]: accent }}>
        <Header node={node} title={title} schema={schema} run={run} status={status} renaming={renaming} setRenaming={setRenaming} />
        {schema.inputs.map((i) => (
          <Handle key={i.name} type="target" position={Position.Left} id={`in:${i.name}`} className="ll-socket ll-socket-hidden" style={{ ['--c' as string]: types.color(i.type) }} />
        ))}
        {schema.outputs.map((o) => (
          <Handle key={o.name} type="source" position={Position.Right} id={`out:${o.name}`} className="ll-socket ll-socket-hidden" style={{ ['--c' as string]: types.color(o.type) }} />
        ))}
      </div>
    );
  }

  return (
    <div className={cls} data-node-id={node.id} data-status={status ?? ''} style={{ ['--node-accent' as string]: accent }}>
      <Header node={node} title={title} schema={schema} run={run} status={status} renaming={renaming} setRenaming={setRenaming} />
      <div className="ll-progress" aria-hidden={progress === null}>
        <div style={{ width: progress === null ? (status === 'running' ? '100%' : '0') : `${progress * 100}%` }} className={progress === null && status === 'running' ? 'indeterminate' : ''} />
      </div>
      {rows > 0 ? (
        <div className="ll-slots">
          {Array.from({ length: rows }, (_, r) => (
            <div className="ll-slot-row" key={r}>
              <div className="ll-slot ll-slot-in">
                {sockets[r] ? <InputSocket node={node} input={sockets[r]} linked={linked.has(sockets[r].name)} faulty={errorInputs.has(sockets[r].name)} /> : null}
              </div>
              <div className="ll-slot ll-slot-out">
                {schema.outputs[r] ? (
                  <div className="ll-out" title={`${schema.outputs[r].type}${schema.outputs[r].description ? ': ' + schema.outputs[r].description : ''}`}>
                    <span className="ll-slot-label">{schema.outputs[r].name}</span>
                    <Handle
                      type="source"
                      position={Position.Right}
                      id={`out:${schema.outputs[r].name}`}
                      className="ll-socket"
                      style={{ ['--c' as string]: types.color(schema.outputs[r].type) }}
                    />
                  </div>
                ) : null}
              </div>
            </div>
          ))}
        </div>
      ) : null}
      {shownWidgets.length ? (
        <div className="ll-widgets">
          {shownWidgets.map((i) => (
            <WidgetRow key={i.name} node={node} input={i} linked={linked.has(i.name)} faulty={errorInputs.has(i.name)} seedMode={seedCtl[i.name]} />
          ))}
        </div>
      ) : null}
      {hiddenAdvanced.length || (showAdvanced && widgets.some((i) => i.advanced)) ? (
        <button type="button" className="ll-advanced nodrag" onClick={() => editor.store.set({ advanced: { ...editor.s.advanced, [node.id]: !showAdvanced } })}>
          {showAdvanced ? 'Hide advanced' : `Show ${hiddenAdvanced.length} advanced`}
        </button>
      ) : null}
      {schema.loop ? (
        <button type="button" className="ll-btn ll-open-body nodrag" onClick={() => editor.openBody(node.id)} title="Edit the graph this loop runs on each iteration">
          Open loop body ▸
        </button>
      ) : null}
      {nodeLevelErrors.length || (errors ?? []).some((e) => e.input) ? (
        <ul className="ll-errors" role="alert">
          {(errors ?? []).map((e, k) => (
            <li key={k}>
              {e.input ? <b>{e.input}: </b> : null}
              {e.message}
            </li>
          ))}
        </ul>
      ) : null}
      {run?.error && !errors?.length ? <ul className="ll-errors" role="alert"><li>{run.error}</li></ul> : null}
      {run?.status === 'running' && run.statusText ? <div className="ll-status" data-testid="node-status">{run.statusText}</div> : null}
      {run?.warning ? <div className="ll-warning">⚠ {run.warning}</div> : null}
      <Media run={run} />
    </div>
  );
}

function Header({ node, title, schema, run, status, renaming, setRenaming }: {
  node: GNode; title: string; schema: NodeSchema; run?: NodeRun; status?: string; renaming: boolean; setRenaming: (v: boolean) => void;
}) {
  return (
    <div className="ll-node-header" title={schema.description || schema.name} onDoubleClick={(e) => { e.stopPropagation(); setRenaming(true); }}>
      <button
        type="button"
        className="ll-collapse nodrag"
        aria-label={node.collapsed ? 'expand' : 'collapse'}
        onClick={(e) => { e.stopPropagation(); editor.toggleCollapse([node.id]); }}
      >
        {node.collapsed ? '▸' : '▾'}
      </button>
      {renaming ? (
        <input
          className="ll-rename nodrag"
          autoFocus
          defaultValue={title}
          onKeyDown={(e) => {
            e.stopPropagation();
            if (e.key === 'Enter') (e.target as HTMLInputElement).blur();
            if (e.key === 'Escape') setRenaming(false);
          }}
          onBlur={(e) => {
            const v = e.target.value.trim();
            if (v !== title) editor.patchNode(node.id, { title: v && v !== schema.display_name ? v : undefined }, 'Rename');
            setRenaming(false);
          }}
        />
      ) : (
        <span className="ll-title">{title}</span>
      )}
      {node.bypass ? <span className="ll-chip ll-chip-bypass">bypassed</span> : null}
      {status && STATUS_LABEL[status] ? (
        <span className={`ll-chip ll-chip-${status}`} data-testid="run-status">
          {status === 'executed' && run?.seconds !== undefined
            ? `${STATUS_LABEL[status]} ${fmtSeconds(run.seconds)}`
            : status === 'running' && run?.progress?.max
              ? `${Math.round(run.progress.value)}/${Math.round(run.progress.max)}`
              : STATUS_LABEL[status]}
        </span>
      ) : null}
      <span className="ll-node-id" title="node id">{node.id}</span>
    </div>
  );
}

function fmtSeconds(s: number): string {
  return s < 1 ? `${Math.round(s * 1000)}ms` : `${s.toFixed(1)}s`;
}

function InputSocket({ node, input, linked, faulty }: { node: GNode; input: InputSchema; linked: boolean; faulty: boolean }) {
  const types = editor.s.catalog.types;
  const outer = node.outerLinks?.[input.name];
  const color = types.color(input.type);
  return (
    <div className={'ll-in' + (faulty ? ' faulty' : '') + (!input.required ? ' optional' : '')} title={`${input.type}${input.required ? '' : ' (optional)'}${input.description ? ': ' + input.description : ''}`}>
      <Handle type="target" position={Position.Left} id={`in:${input.name}`} className={'ll-socket' + (input.required ? '' : ' hollow')} style={{ ['--c' as string]: color }} />
      <span className="ll-slot-label">{input.display_name || input.name}</span>
      {outer && !linked ? <OuterLink node={node} input={input.name} link={outer} /> : null}
    </div>
  );
}

function OuterLink({ node, input, link }: { node: GNode; input: string; link: { node: string; output: string } }) {
  return (
    <span className="ll-outer nodrag" title="linked to a node of the enclosing graph">
      ↰ {link.node}.{link.output}
      <button type="button" aria-label="remove outer link" onClick={() => editor.removeOuterLink(node.id, input)}>×</button>
    </span>
  );
}

function WidgetRow({ node, input, linked, faulty, seedMode }: { node: GNode; input: InputSchema; linked: boolean; faulty: boolean; seedMode?: string }) {
  const types = editor.s.catalog.types;
  const outer = node.outerLinks?.[input.name];
  return (
    <div className={'ll-wrow' + (faulty ? ' faulty' : '') + (linked || outer ? ' linked' : '')} data-widget={input.name}>
      <Handle type="target" position={Position.Left} id={`in:${input.name}`} className="ll-socket ll-socket-widget" style={{ ['--c' as string]: types.color(input.type) }} />
      {linked ? (
        <div className="ll-linked-widget" title={`${input.type} from a link`}>
          <span className="ll-wlabel">{input.display_name || input.name}</span>
          <span className="ll-linked-tag" style={{ color: types.color(input.type) }}>linked</span>
        </div>
      ) : outer ? (
        <div className="ll-linked-widget">
          <span className="ll-wlabel">{input.display_name || input.name}</span>
          <OuterLink node={node} input={input.name} link={outer} />
        </div>
      ) : (
        <Widget nodeId={node.id} input={input} value={node.values[input.name] ?? input.default} seedMode={seedMode} />
      )}
    </div>
  );
}

function Media({ run }: { run?: NodeRun }) {
  if (!run) return null;
  const showPreview = run.preview && (run.status === 'running' || !run.images?.length);
  if (!showPreview && !run.images?.length && !run.text?.length) return null;
  return (
    <div className="ll-media nodrag">
      {showPreview ? <img className="ll-preview" src={run.preview} alt="live preview" draggable={false} /> : null}
      {!showPreview && run.images?.length ? (
        <div className={'ll-images' + (run.images.length > 1 ? ' grid' : '')}>
          {run.images.map((f, i) => (
            <img
              key={i}
              src={viewUrl(f)}
              alt={f.filename}
              className="ll-output-image"
              draggable={false}
              onClick={(e) => { e.stopPropagation(); editor.openDialog({ kind: 'lightbox', src: viewUrl(f), title: f.filename }); }}
            />
          ))}
        </div>
      ) : null}
      {run.text?.map((t, i) => <pre key={i} className="ll-text-out">{t}</pre>)}
    </div>
  );
}
