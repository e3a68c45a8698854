# Finds gRPC C++ and protobuf for psyserve::client: used by the build and by the installed
# psyserveConfig.cmake. Always leaves the targets gRPC::grpc++ and protobuf::libprotobuf defined:
# from gRPC's CMake package (Debian 12's libgrpc++-dev) and FindProtobuf, else from pkg-config.
# Sets PSYSERVE_PROTOC and PSYSERVE_GRPC_PLUGIN (the code generators; only the build needs them).
include_guard(GLOBAL)

find_package(Protobuf QUIET)
find_package(gRPC CONFIG QUIET)

if(NOT TARGET protobuf::libprotobuf)
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(PSYSERVE_PROTOBUF REQUIRED IMPORTED_TARGET protobuf)
  add_library(protobuf::libprotobuf INTERFACE IMPORTED)
  set_target_properties(protobuf::libprotobuf PROPERTIES INTERFACE_LINK_LIBRARIES PkgConfig::PSYSERVE_PROTOBUF)
endif()

if(NOT TARGET gRPC::grpc++)
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(PSYSERVE_GRPCPP REQUIRED IMPORTED_TARGET grpc++)
  add_library(gRPC::grpc++ INTERFACE IMPORTED)
  set_target_properties(gRPC::grpc++ PROPERTIES INTERFACE_LINK_LIBRARIES PkgConfig::PSYSERVE_GRPCPP)
endif()

if(NOT PSYSERVE_PROTOC)
  if(TARGET protobuf::protoc)
    get_target_property(PSYSERVE_PROTOC protobuf::protoc IMPORTED_LOCATION)
  endif()
  if(NOT PSYSERVE_PROTOC)
    find_program(PSYSERVE_PROTOC protoc)
  endif()
endif()
if(NOT PSYSERVE_GRPC_PLUGIN)
  if(TARGET gRPC::grpc_cpp_plugin)
    get_target_property(PSYSERVE_GRPC_PLUGIN gRPC::grpc_cpp_plugin IMPORTED_LOCATION_NONE)
    if(NOT PSYSERVE_GRPC_PLUGIN)
      get_target_property(PSYSERVE_GRPC_PLUGIN gRPC::grpc_cpp_plugin LOCATION)
    endif()
  endif()
  if(NOT PSYSERVE_GRPC_PLUGIN OR NOT EXISTS "${PSYSERVE_GRPC_PLUGIN}")
    find_program(PSYSERVE_GRPC_PLUGIN grpc_cpp_plugin)
  endif()
endif()
