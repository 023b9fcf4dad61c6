// A group: a titled, resizable frame; dragging its title moves the nodes inside it.

import { NodeResizer, type NodeProps } from '@xyflow/react';
import { useState } from 'react';
import { currentGraph } from '../state/derived';
import { editor } from '../state/editor';
import { useEd } from '../state/hooks';

export function GroupView({ data, selected }: NodeProps) {
  const gid = (data as { id: string }).id;
  const group = useEd((s) => currentGraph(s).groups.find((g) => g.id === gid));
  const [editing, setEditing] = useState(false);
  if (!group) return null;
  return (
    <div className={'ll-group' + (selected ? ' selected' : '')} style={group.color ? { ['--gc' as string]: group.color } : undefined}>
      <NodeResizer
        isVisible={selected}
        minWidth={120}
        minHeight={80}
        lineClassName="ll-group-resize-line"
        handleClassName="ll-group-resize-handle"
        onResizeStart={() => editor.beginGesture()}
        onResizeEnd={() => editor.endGesture('Resize group')}
      />
      <div className="ll-group-header" onDoubleClick={(e) => { e.stopPropagation(); setEditing(true); }}>
        {editing ? (
          <input
            className="nodrag"
            autoFocus
            defaultValue={group.title}
            onKeyDown={(e) => {
              e.stopPropagation();
              if (e.key === 'Enter' || e.key === 'Escape') (e.target as HTMLInputElement).blur();
            }}
            onBlur={(e) => {
              if (e.target.value !== group.title) editor.patchGroup(gid, { title: e.target.value || 'Group' }, 'Rename group');
              setEditing(false);
            }}
          />
        ) : (
          <span>{group.title}</span>
        )}
      </div>
    </div>
  );
}
