#!/usr/bin/env python3
"""pymodbus as a foreign Modbus server holding a SunSpec image taken from one of pysunspec2's
device images: `SunS` at 40000, then every model's registers (`get_mb()`), then the end marker.

Usage: pymodbus_sunspec_server.py DEVICE_JSON PORT
Prints `ready` once listening; serves until killed.
"""
import asyncio
import struct
import sys

from pymodbus.server import StartAsyncTcpServer
from pymodbus.simulator import SimData, SimDevice, DataType
from sunspec2.file.client import FileClientDevice


def image(path):
    dev = FileClientDevice(path)
    dev.scan()
    data = b"SunS"
    for m in dev.model_list:
        data += m.get_mb()
    data += struct.pack(">HH", 0xFFFF, 0)
    return list(struct.unpack(">%dH" % (len(data) // 2), data))


async def main():
    regs = image(sys.argv[1])
    port = int(sys.argv[2])
    device = SimDevice(id=0, simdata=[SimData(address=40000, values=regs, datatype=DataType.REGISTERS)])
    print("ready", flush=True)
    await StartAsyncTcpServer(context=device, address=("127.0.0.1", port))


if __name__ == "__main__":
    asyncio.run(main())
