import { z } from '../../io/zod.js';

/**
 * The report `diagnose` prints: one item per thing it looked at, each with a verdict and, when it
 * is not ok, what to do. `diagnose --json` prints the report as this schema describes it; the text
 * form says the same for a person.
 */
export const VERDICTS = ['ok', 'warning', 'problem'] as const;
export type Verdict = (typeof VERDICTS)[number];

/**
 * `diagnose` exits 0 when no item is a problem and this code otherwise; it is not in the failure
 * catalogue (src/failures.ts) because no lifecycle command ever exits with it.
 */
export const DIAGNOSE_PROBLEMS_EXIT_CODE = 29;

export const itemSchema = z.object({
  /** Stable, for scripts: `os`, `memory`, `disk:/var`, `registration:pam` … */
  id: z.string().min(1),
  title: z.string().min(1),
  verdict: z.enum(VERDICTS),
  /** What was found, in a sentence or two. */
  detail: z.string(),
  /** What to do; present when the verdict is not ok. */
  remedy: z.string().optional(),
});
export type Item = z.infer<typeof itemSchema>;

export const reportSchema = z.object({
  schemaVersion: z.literal(1),
  handler: z.string(),
  /** The handler's four-part version. */
  version: z.string(),
  generatedAt: z.string().datetime(),
  /** What the command exits with: 0, or DIAGNOSE_PROBLEMS_EXIT_CODE when any item is a problem. */
  exitCode: z.number().int(),
  summary: z.object({
    ok: z.number().int(),
    warning: z.number().int(),
    problem: z.number().int(),
  }),
  items: z.array(itemSchema),
});
export type Report = z.infer<typeof reportSchema>;

export function buildReport(options: {
  handler: string;
  version: string;
  now: Date;
  items: Item[];
}): Report {
  const count = (verdict: Verdict) =>
    options.items.filter((item) => item.verdict === verdict).length;
  const summary = { ok: count('ok'), warning: count('warning'), problem: count('problem') };
  return {
    schemaVersion: 1,
    handler: options.handler,
    version: options.version,
    generatedAt: options.now.toISOString(),
    exitCode: summary.problem > 0 ? DIAGNOSE_PROBLEMS_EXIT_CODE : 0,
    summary,
    items: options.items,
  };
}

const LABELS: Record<Verdict, string> = { ok: 'ok', warning: 'WARNING', problem: 'PROBLEM' };

/** The report for a person: one block per item, problems and warnings with their remedy. */
export function renderText(report: Report): string {
  const width = Math.max(...Object.values(LABELS).map((label) => label.length)) + 2;
  const lines = [`${report.handler} ${report.version} diagnose, ${report.generatedAt}`, ''];
  for (const item of report.items) {
    lines.push(`${`[${LABELS[item.verdict]}]`.padEnd(width)} ${item.title}: ${item.detail}`);
    if (item.remedy) lines.push(`${' '.repeat(width)} Remedy: ${item.remedy}`);
  }
  const { ok, warning, problem } = report.summary;
  lines.push(
    '',
    `${ok} ok, ${warning} warning${warning === 1 ? '' : 's'}, ${problem} problem${problem === 1 ? '' : 's'}. Exit code ${report.exitCode} (0 when no item is a problem, ${DIAGNOSE_PROBLEMS_EXIT_CODE} otherwise).`,
  );
  return lines.join('\n');
}
