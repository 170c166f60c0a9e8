/**
 * The lifecycle operations the agent runs, as one table: how long the agent lets each run before
 * it kills the process group, and whether the command reports progress (`transitioning` first)
 * or only its result. Every command writes a terminal status for its sequence number; behaviour
 * is bound to these entries in one place, the pipeline.
 */

export const VERBS = ['install', 'enable', 'disable', 'uninstall', 'update'] as const;
export type Verb = (typeof VERBS)[number];

export interface Operation {
  verb: Verb;
  /** As the agent and the portal show it. */
  title: string;
  /** The agent's timeout for this command (WALinuxAgent `ga/exthandlers.py`). */
  agentTimeoutSeconds: number;
  /** Our own deadline: the command stops itself and reports before the agent would kill it. */
  deadlineSeconds: number;
  /** `progress`: write `transitioning` first, then the result. `result`: only the result. */
  reports: 'progress' | 'result';
  /**
   * Whether the command reads the settings. `disable` and `uninstall` never need them (during an
   * update the old version's run with the new sequence number, whose settings file it does not
   * have), and `update` only hands the installation over; none of them fails over settings.
   */
  readsSettings: boolean;
}

/** Stop with a margin of 10 % of the agent's timeout, at least 15 s, to write status and exit. */
function operation(
  verb: Verb,
  title: string,
  agentTimeoutSeconds: number,
  reports: Operation['reports'],
  readsSettings: boolean,
): Operation {
  const margin = Math.max(15, Math.ceil(agentTimeoutSeconds / 10));
  return {
    verb,
    title,
    agentTimeoutSeconds,
    deadlineSeconds: agentTimeoutSeconds - margin,
    reports,
    readsSettings,
  };
}

export const operations: Readonly<Record<Verb, Operation>> = {
  install: operation('install', 'Install', 900, 'progress', true),
  enable: operation('enable', 'Enable', 300, 'progress', true),
  disable: operation('disable', 'Disable', 900, 'result', false),
  uninstall: operation('uninstall', 'Uninstall', 300, 'result', false),
  update: operation('update', 'Update', 900, 'progress', false),
};

export function isVerb(value: string | undefined): value is Verb {
  return (VERBS as readonly string[]).includes(value ?? '');
}
