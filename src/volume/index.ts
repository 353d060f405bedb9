// The volume manager's public surface: pools, devices, layouts.
export { Pool, PoolOptions, DeviceInfo, VolumeInfo, MemberInfo } from './pool'
export { Device, openDevice, OpenDeviceOptions } from './device'
export { SliceDev } from './slice'
export { ConcatDev } from './concat'
export { StripeDev, DEFAULT_STRIPE_UNIT } from './stripe'
export { MirrorDev, MirrorOptions } from './mirror'
export { PoolConfig, VolumeSpec, DeviceConfig, VolumeConfig, MemberConfig } from './config'
export { readLabel, writeLabel, RESERVED_BYTES } from './label'
