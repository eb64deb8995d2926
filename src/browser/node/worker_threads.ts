/** node:worker_threads in the browser build: the ORT-node GEMM worker (linalg/ort-gemm-sync.ts) is Node-only. */
import { unavailable } from './unavailable.js';

export const MessageChannel = unavailable('worker_threads.MessageChannel');
export const receiveMessageOnPort = unavailable('worker_threads.receiveMessageOnPort');
export const Worker = unavailable('worker_threads.Worker');
