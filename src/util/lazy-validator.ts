/**
 * JSON-schema validators compiled on first use. Loading ajv and compiling the bundle schemas
 * costs about 100 ms on a 2-core machine; `require('invad')` should not pay that before the
 * first bundle is loaded.
 */
import type { ErrorObject, Options, ValidateFunction } from 'ajv';

/** A type guard with ajv's `errors` of its last call (null after a success). */
export interface SchemaValidator<T> {
  (data: unknown): data is T;
  errors: ErrorObject[] | null | undefined;
}

export function lazyValidator<T>(schema: object, options: Options): SchemaValidator<T> {
  let compiled: ValidateFunction<T> | undefined;
  const validate = ((data: unknown): data is T => {
    if (!compiled) {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- deferred on purpose (see the file comment)
      const AjvClass = (require('ajv') as typeof import('ajv')).default;
      compiled = new AjvClass(options).compile<T>(schema);
    }
    const ok = compiled(data);
    validate.errors = compiled.errors;
    return ok;
  }) as SchemaValidator<T>;
  validate.errors = null;
  return validate;
}
