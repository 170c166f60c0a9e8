import { HandlerFailure } from '../failures.js';
import { z } from '../io/zod.js';

/**
 * AADSSHLoginForLinux's public settings (all optional; see the contract). A mirror URL is written
 * into repository files, so it must be a plain http(s) URL: no whitespace, quotes or control
 * characters (`\p{Cc}`: NUL, ESC, DEL, NEL …) that could add lines to a repository file, and one
 * that parses as a URL.
 */
const baseUrlSchema = z
  .string()
  .regex(
    /^https?:\/\/[^\s"'`\\\p{Cc}]+$/u,
    'must be an http:// or https:// URL without spaces, quotes or control characters',
  )
  .refine((url) => URL.canParse(url), 'must be an http:// or https:// URL that parses')
  .transform((url) => url.replace(/\/+$/, ''));

const fingerprintSchema = z
  .string()
  .transform((value) => value.replace(/\s+/g, '').toUpperCase())
  .pipe(z.string().regex(/^[0-9A-F]{40}$/, 'must be a 40-digit hexadecimal key fingerprint'));

const repositorySchema = z.object({
  baseUrl: baseUrlSchema.optional(),
  keyFingerprints: z.array(fingerprintSchema).optional(),
});

export interface LinuxSettings {
  repository: { baseUrl: string | undefined; keyFingerprints: string[] };
}

const KNOWN = { top: ['repository'], repository: ['baseUrl', 'keyFingerprints'] } as const;

/** Validates public settings: invalid values fail naming the key; unknown keys are warnings. */
export function parseLinuxSettings(publicSettings: Record<string, unknown>): {
  settings: LinuxSettings;
  warnings: string[];
} {
  const warnings: string[] = [];
  for (const key of Object.keys(publicSettings)) {
    if (!(KNOWN.top as readonly string[]).includes(key)) {
      warnings.push(`Unknown public setting "${key}" is ignored.`);
    }
  }
  const repository = publicSettings.repository ?? {};
  if (typeof repository !== 'object' || repository === null || Array.isArray(repository)) {
    throw new HandlerFailure('invalidSettings', 'Public setting "repository" must be an object.');
  }
  for (const key of Object.keys(repository)) {
    if (!(KNOWN.repository as readonly string[]).includes(key)) {
      warnings.push(`Unknown public setting "repository.${key}" is ignored.`);
    }
  }
  const parsed = repositorySchema.safeParse(repository);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const key = ['repository', ...(issue?.path ?? [])].join('.');
    throw new HandlerFailure(
      'invalidSettings',
      `Public setting "${key}" is invalid: ${issue?.message ?? 'invalid value'}.`,
    );
  }
  return {
    settings: {
      repository: {
        baseUrl: parsed.data.baseUrl,
        keyFingerprints: parsed.data.keyFingerprints ?? [],
      },
    },
    warnings,
  };
}
