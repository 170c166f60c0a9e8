import { promises as fs } from 'node:fs';
import path from 'node:path';
import { HandlerFailure } from '../failures.js';
import { readTextIfExists, writeFileAtomic, writeProblem } from '../io/files.js';
import { z } from '../io/zod.js';

/**
 * What this handler has done on the VM, kept in one file outside the versioned handler folder so
 * that it survives the agent's update sequence (old disable → new update → old uninstall → new
 * install → new enable), which deletes the old folder.
 *
 * `owner` is the handler version responsible for what is installed. The new version's `update`
 * hands ownership over; the old version's `uninstall` that follows sees it no longer owns the
 * installation and leaves it in place for the new version.
 */
const appliedSchema = z.object({
  sequenceNumber: z.number().int(),
  operation: z.string(),
  version: z.string(),
  status: z.string(),
  at: z.string(),
});

export const handlerStateSchema = z.looseObject({
  schemaVersion: z.literal(1),
  owner: z.string().nullable(),
  /** What the extension installed, by its own keys (repository files, packages, …). */
  installed: z.record(z.string(), z.unknown()),
  /** The most recent terminal results, newest last. */
  applied: z.array(appliedSchema),
  /** Steps of an operation in progress, to roll back or finish after a crash. */
  journal: z.array(z.unknown()),
});

export type HandlerState = z.infer<typeof handlerStateSchema>;
export type AppliedOperation = z.infer<typeof appliedSchema>;

export const MAX_APPLIED = 20;

export function emptyState(): HandlerState {
  return { schemaVersion: 1, owner: null, installed: {}, applied: [], journal: [] };
}

export interface StateStore {
  readonly file: string;
  load(): Promise<{ state: HandlerState; problem?: string }>;
  save(state: HandlerState): Promise<void>;
}

/**
 * The state file at `file`. A file that cannot be parsed is moved aside (kept for a person to
 * read, never silently deleted) and the handler starts from an empty state, saying so.
 */
export function fileStateStore(file: string): StateStore {
  return {
    file,
    async load() {
      const text = await readTextIfExists(file);
      if (text === undefined) return { state: emptyState() };
      try {
        const parsed = handlerStateSchema.safeParse(JSON.parse(text));
        if (parsed.success) return { state: parsed.data };
      } catch {
        // handled below
      }
      const aside = `${file}.unreadable-${Date.now()}`;
      await fs.rename(file, aside).catch(() => undefined);
      return {
        state: emptyState(),
        problem: `The handler state ${file} was unreadable; it was moved to ${aside} and the handler started afresh.`,
      };
    },
    async save(state) {
      try {
        await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
        await writeFileAtomic(file, `${JSON.stringify(state, null, 2)}\n`, 0o600);
      } catch (error) {
        throw new HandlerFailure(
          'cannotWriteHandlerFiles',
          `Cannot write the handler state ${file}: ${writeProblem(error, path.dirname(file))}.`,
          { cause: error },
        );
      }
    },
  };
}

/** Records a terminal result, keeping only the most recent ones. */
export function recordApplied(state: HandlerState, entry: AppliedOperation): HandlerState {
  return { ...state, applied: [...state.applied, entry].slice(-MAX_APPLIED) };
}
