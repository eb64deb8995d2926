/**
 * What saveModel takes and returns, and which tensors it moves to external data.
 */
import type { FsLike } from '../util/fsio.js';
import type { OutputPath, InputPath } from '../util/output-paths.js';
import type { ExternalReader } from './external.js';
import type { LoadedModel } from './load.js';
import { DataType, type ModelProto, type TensorProto } from './schema.js';

/** Above this inline size, saveModel moves initializers to external data unless told not to. */
export const AUTO_EXTERNAL_BYTES = 2 ** 31 - 64 * 2 ** 20;
/** Offsets in external data files are multiples of this (lets ORT mmap them). */
export const EXTERNAL_ALIGN = 4096;
export const DEFAULT_EXTERNAL_THRESHOLD = 1024;
/**
 * Integer initializers smaller than this stay inline whatever the threshold: they are shape,
 * axes and index constants, and ORT (1.30) refuses to load a model whose shape inference
 * needs one of them from external data ("Cannot parse data from external tensors").
 */
export const INLINE_INT_BYTES = 1024;
/**
 * 1-D (and scalar) integer initializers smaller than this stay inline too: shapes, axes,
 * pads and repeats are 1-D, and a valid one can pass 1024 bytes (a 130-element Reshape
 * shape did, and ORT refused the model). Quantized weights, the integer tensors worth
 * moving out, have two dims or more.
 */
export const INLINE_INT_1D_BYTES = 64 * 1024;

const isIntType = (dt: number): boolean => dt === DataType.INT64 || dt === DataType.INT32 || dt === DataType.INT16
  || dt === DataType.INT8 || dt === DataType.UINT64 || dt === DataType.UINT32 || dt === DataType.UINT16 || dt === DataType.UINT8;

export interface ExternalDataOptions {
  /**
   * File name beside the output (a plain name, no folders). Default: `<OUT basename>.<hash>.data`,
   * named by a hash of its content, so that a model file can only ever name the data written
   * with it. A given location is used as is: then a run killed between the renames of the
   * data and the model leaves the old model beside the new data.
   */
  location?: string;
  /**
   * Initializers with payloads of at least this many bytes go external; default 1024.
   * Integer tensors under INLINE_INT_BYTES (and 1-D ones under INLINE_INT_1D_BYTES) stay inline regardless.
   */
  threshold?: number;
}

export interface SaveOptions {
  /**
   * true / options: move large initializers to an external file. false: keep all inline
   * (fails past 2 GiB). Absent: inline, unless the protobuf would pass ~2 GiB.
   */
  externalData?: boolean | ExternalDataOptions;
  /** Allow OUT to be the input file (then also OUT's data file to be one of the input's). */
  force?: boolean;
  /** Other files the caller writes beside OUT (a report): they may not be OUT, its data or an input. */
  otherOutputs?: readonly OutputPath[];
  /**
   * More files to treat as inputs (never replaced without `force`, never removed as unused
   * data): the user's IN when the model saved is a working copy of it (optimize --compute).
   */
  alsoInputs?: readonly InputPath[];
  /**
   * Entries for the model's metadata_props (what made the file, for Netron and later
   * tools): each replaces an entry of the same key the model had; the others are kept.
   */
  metadata?: Readonly<Record<string, string>>;
  /** Keys to drop from the model's metadata_props (entries appendMetadata adds after the save). */
  dropMetadata?: readonly string[];
  /** Test hook: fs-like object for writes (to simulate a full disk). */
  fs?: FsLike;
  /** Test hook: inline size above which external data is chosen automatically. */
  autoExternalBytes?: number;
}

export interface SaveResult {
  path: string;
  bytes: number;
  /** The external data file, when one was written. */
  externalPath?: string;
  externalBytes?: number;
  externalTensors: number;
}

/** A model to save, with the reader for any external tensors it still refers to. */
export type ModelSource = LoadedModel | { model: ModelProto; external?: ExternalReader; path?: string; dataFiles?: readonly string[] } | ModelProto;

/** Integer tensors ORT may read during shape inference stay inline (see INLINE_INT_BYTES). */
export function keptInline(t: TensorProto, dt: number, size: number): boolean {
  return isIntType(dt) && (size < INLINE_INT_BYTES || (t.dims.length <= 1 && size < INLINE_INT_1D_BYTES));
}
