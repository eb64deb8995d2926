/** --shape and --input arguments, shared by inspect and optimize. */
import { unwrap } from '../errors.js';
import { loadInputArgs, parseShapeArgs, type ShapeOverrides, type ValueOverrides } from '../verify/inputs.js';

export function feedOverrides(shapeArgs: readonly string[], inputArgs: readonly string[], maxBytes?: number): { shapes: ShapeOverrides; values: ValueOverrides } {
  return { shapes: unwrap(parseShapeArgs(shapeArgs)), values: unwrap(loadInputArgs(inputArgs, maxBytes)) };
}
