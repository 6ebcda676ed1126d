/**
 * The one error a model load raises: what went wrong, in which file, for which field or tensor.
 * `message` is a complete one-line explanation fit for a CLI's error line.
 */
export class ModelLoadError extends Error {
  override name = 'ModelLoadError';
  /** The file (or directory) at fault. */
  readonly file: string;
  /** The config field or tensor name at fault, when there is one. */
  readonly field?: string;

  constructor(file: string, reason: string, field?: string, options?: { cause?: unknown }) {
    super(`${file}${field ? `: ${field}` : ''}: ${reason}`, options);
    this.file = file;
    this.field = field;
  }
}

/** No usable compute backend: the one asked for is missing or failed to load. */
export class BackendError extends Error {
  override name = 'BackendError';
}
