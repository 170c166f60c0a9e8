/**
 * `/etc/os-release` (os-release(5)): `KEY=value` lines, values quoted with `"` or `'` or not at
 * all, backslash escapes inside double quotes, `#` comments and blank lines ignored.
 */

export const OS_RELEASE_FILES = ['/etc/os-release', '/usr/lib/os-release'] as const;

export interface OsRelease {
  /** Lower-case `ID`, e.g. `ubuntu`, `rhel`, `sles_sap`; `linux` when absent (as the spec says). */
  id: string;
  /** `VERSION_ID`, or `undefined` when the distribution has none (rolling releases). */
  versionId: string | undefined;
  idLike: string[];
  prettyName: string | undefined;
  versionCodename: string | undefined;
  /** Every field as read, for the log. */
  fields: Record<string, string>;
}

function unquote(raw: string): string {
  const value = raw.trim();
  if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) {
    return value.slice(1, -1).replace(/\\([\\"$`])/g, '$1');
  }
  if (value.length >= 2 && value.startsWith("'") && value.endsWith("'")) {
    return value.slice(1, -1);
  }
  return value.replace(/\\(.)/g, '$1');
}

/** Parses the file's text; lines that are not assignments are ignored, never an error. */
export function parseOsRelease(text: string): OsRelease {
  const fields: Record<string, string> = {};
  for (const rawLine of text.replace(/^\uFEFF/, '').split(/\r?\n/)) {
    const line = rawLine.trim();
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (!match?.[1]) continue;
    fields[match[1]] = unquote(match[2] ?? '');
  }
  const versionId = fields.VERSION_ID?.trim();
  return {
    id: (fields.ID?.trim() || 'linux').toLowerCase(),
    versionId: versionId ? versionId : undefined,
    idLike: (fields.ID_LIKE ?? '').toLowerCase().split(/\s+/).filter(Boolean),
    prettyName: fields.PRETTY_NAME,
    versionCodename: fields.VERSION_CODENAME?.trim() || undefined,
    fields,
  };
}
