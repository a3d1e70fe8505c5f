# cmds_cuda_sources(TARGET file.cu...): the CUDA sources of a target.
#   - a CUDA build (CMDS_CUDA with nvcc): the .cu files, compiled by nvcc;
#   - the CUDA emulation (CMDS_CUDA_EMU, tests/cuda_emu): each .cu rewritten by cmds-cu2cpp into
#     C++ (launches become calls into the emulation) and compiled by the C++ compiler against the
#     emulation's headers. Inline PTX has no C++ form: a file that uses it calls the emulation's
#     own forms of those instructions under CMDS_CUDA_EMU (flash_attention.cu does). The target
#     links cmds_cuda_emu, or the library named in CMDS_CUDA_EMU_LIB where the caller sets it.
function(cmds_cuda_sources target)
  if(NOT CMDS_CUDA_EMU)
    target_sources(${target} PRIVATE ${ARGN})
    return()
  endif()
  foreach(f ${ARGN})
    get_filename_component(name ${f} NAME)
    get_filename_component(abs ${f} ABSOLUTE)
    get_filename_component(dir ${abs} DIRECTORY)
    set(out ${CMAKE_CURRENT_BINARY_DIR}/cuda_emu/${target}/${name}.cpp)
    add_custom_command(OUTPUT ${out}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_CURRENT_BINARY_DIR}/cuda_emu/${target}
      COMMAND cmds-cu2cpp ${abs} ${out}
      DEPENDS ${abs} cmds-cu2cpp VERBATIM)
    target_sources(${target} PRIVATE ${out})
    target_include_directories(${target} PRIVATE ${dir})
  endforeach()
  if(NOT CMDS_CUDA_EMU_LIB)
    set(CMDS_CUDA_EMU_LIB cmds_cuda_emu)
  endif()
  target_link_libraries(${target} PUBLIC ${CMDS_CUDA_EMU_LIB})
endfunction()
