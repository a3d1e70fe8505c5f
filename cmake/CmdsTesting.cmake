# Test helpers (STYLE.md): one way to add unit and MPI tests, with labels.
#   cmds_add_test(NAME name COMMAND cmd... [LABELS l...] [ENV k=v...] [FIXTURES_SETUP f...] [FIXTURES_REQUIRED f...] [TIMEOUT s])
#   add_mpi_test(NAME name NPROCS n COMMAND cmd... [same options])
# MPI tests run under MPIEXEC_EXECUTABLE with --oversubscribe (CI has 2 cores, tests use 4 ranks).
# Benchmarks (LABELS bench) exist only in the CTest configuration `bench`: they are registered
# with add_test(... CONFIGURATIONS bench), so a plain `ctest` (any -R/-L, no -C) neither lists
# nor runs them, and `ctest -C bench -L bench` (`make bench`) runs them all. (Single-config
# generators, which cmds uses: -C bench only selects tests, the binaries are the build's own.)
set(CMDS_BENCH_CONFIGURATION bench)
set(CMDS_MPIEXEC_PREFLAGS --oversubscribe CACHE STRING "Flags before the program in MPI tests")
if(CMAKE_HOST_SYSTEM_NAME STREQUAL "Linux")
  execute_process(COMMAND id -u OUTPUT_VARIABLE _cmds_uid OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(_cmds_uid STREQUAL "0")
    list(APPEND CMDS_MPIEXEC_PREFLAGS --allow-run-as-root)
  endif()
endif()

# The kill-and-resume soak (LABELS soak, tests/jobs/test_soak.sh: minutes of random kills)
# lives the same way in the CTest configuration `soak`: `ctest -C soak -L soak` (`make soak`).
set(CMDS_SOAK_CONFIGURATION soak)

# CONFIGURATIONS argument for add_test: `bench` for benchmarks, `soak` for the soak, none for
# every other test.
function(_cmds_test_configs out labels)
  if("bench" IN_LIST labels)
    set(${out} CONFIGURATIONS ${CMDS_BENCH_CONFIGURATION} PARENT_SCOPE)
  elseif("soak" IN_LIST labels)
    set(${out} CONFIGURATIONS ${CMDS_SOAK_CONFIGURATION} PARENT_SCOPE)
  else()
    set(${out} "" PARENT_SCOPE)
  endif()
endfunction()

function(_cmds_test_props name)
  cmake_parse_arguments(T "" "TIMEOUT;WORKING_DIRECTORY" "LABELS;ENV;FIXTURES_SETUP;FIXTURES_REQUIRED" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  # OMP threads: keep each rank on one thread so oversubscribed MPI tests do not thrash.
  set(_env "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1;CMDS_PROGRESS_INTERVAL=2;${T_ENV}")
  # Sanitizer builds: Open MPI and HDF5 keep allocations alive until exit (and their
  # dlopened components leave no symbols to suppress), so leak checking is meaningful only
  # for tests that never start MPI; address and UB errors are checked everywhere.
  if(T_LABELS MATCHES "mpi|e2e|hdf5")
    list(APPEND _env "ASAN_OPTIONS=detect_leaks=0")
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
    ENVIRONMENT "${_env}" SKIP_RETURN_CODE 77)
  if(T_FIXTURES_SETUP)
    set_tests_properties(${name} PROPERTIES FIXTURES_SETUP "${T_FIXTURES_SETUP}")
  endif()
  if(T_FIXTURES_REQUIRED)
    set_tests_properties(${name} PROPERTIES FIXTURES_REQUIRED "${T_FIXTURES_REQUIRED}")
  endif()
endfunction()

function(cmds_add_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT;WORKING_DIRECTORY" "COMMAND;LABELS;ENV;FIXTURES_SETUP;FIXTURES_REQUIRED" ${ARGN})
  if(NOT T_WORKING_DIRECTORY)
    set(T_WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
  endif()
  _cmds_test_configs(_cfg "${T_LABELS}")
  add_test(NAME ${T_NAME} COMMAND ${T_COMMAND} WORKING_DIRECTORY ${T_WORKING_DIRECTORY} ${_cfg})
  _cmds_test_props(${T_NAME} TIMEOUT "${T_TIMEOUT}" LABELS ${T_LABELS} ENV ${T_ENV}
    FIXTURES_SETUP "${T_FIXTURES_SETUP}" FIXTURES_REQUIRED "${T_FIXTURES_REQUIRED}")
endfunction()

function(add_mpi_test)
  cmake_parse_arguments(T "" "NAME;NPROCS;TIMEOUT;WORKING_DIRECTORY" "COMMAND;LABELS;ENV;FIXTURES_SETUP;FIXTURES_REQUIRED" ${ARGN})
  if(NOT T_WORKING_DIRECTORY)
    set(T_WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
  endif()
  _cmds_test_configs(_cfg "${T_LABELS}")
  add_test(NAME ${T_NAME}
    COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${T_NPROCS} ${CMDS_MPIEXEC_PREFLAGS}
            ${MPIEXEC_PREFLAGS} ${T_COMMAND}
    WORKING_DIRECTORY ${T_WORKING_DIRECTORY} ${_cfg})
  _cmds_test_props(${T_NAME} TIMEOUT "${T_TIMEOUT}" LABELS mpi ${T_LABELS} ENV ${T_ENV}
    FIXTURES_SETUP "${T_FIXTURES_SETUP}" FIXTURES_REQUIRED "${T_FIXTURES_REQUIRED}")
endfunction()
