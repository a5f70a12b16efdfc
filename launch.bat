@echo off
rem Danlu launcher for Windows: creates .venv, installs torch + requirements.txt, runs the tests or the app.
rem Same verbs as launch.sh: no arguments, -- APP_ARGS, setup, test [PYTEST_ARGS], -h
setlocal EnableExtensions EnableDelayedExpansion
cd /d "%~dp0"

rem Pinned: an unpinned torch may pull a build we did not choose.
set "TORCH_VERSION=2.13.0"
rem PyPI's Windows torch is CPU-only; the CUDA build comes from PyTorch's own index.
set "CUDA_INDEX=https://download.pytorch.org/whl/cu128"
set "VPY=.venv\Scripts\python.exe"
set "STAMP=.venv\.danlu-setup"
set "PIP_DISABLE_PIP_VERSION_CHECK=1"

if /i "%~1"=="-h" goto usage
if /i "%~1"=="--help" goto usage
if /i "%~1"=="setup" goto cmd_setup
if /i "%~1"=="test" goto cmd_test
if "%~1"=="--" goto cmd_app
if "%~1"=="" goto cmd_app
echo [danlu] unknown command: %1 1>&2
call :usage
exit /b 2

:cmd_setup
set "VERBOSE=1"
call :setup
exit /b %errorlevel%

:cmd_test
call :setup
if errorlevel 1 exit /b 1
call :rest_args %*
set "HF_HUB_OFFLINE=1"
set "GRADIO_ANALYTICS_ENABLED=False"
"%VPY%" -m pytest -q tests !REST!
exit /b %errorlevel%

:cmd_app
call :setup
if errorlevel 1 exit /b 1
call :rest_args %*
"%VPY%" app.py !REST!
exit /b %errorlevel%

rem ---- subroutines ----

:usage
echo Usage: launch.bat [setup ^| test [PYTEST_ARGS...] ^| -- APP_ARGS... ^| -h]
echo.
echo   (no arguments)   set up if needed, then start the GUI (app.py, in the browser)
echo   -- ARGS          the same, passing ARGS to app.py (e.g. launch.bat -- --port 7861 --lang zh)
echo   setup            create .venv and install torch and requirements.txt (skipped when up to date)
echo   test [ARGS]      set up if needed, then run the test suite (ARGS go to pytest, e.g. -k dataset)
echo.
echo Environment:
echo   DANLU_TORCH      which torch to install: cpu ^| cuda ^| a full pip spec
echo                    (default: cuda when nvidia-smi lists a GPU, else cpu)
echo   DANLU_PYTHON     the Python used to create .venv (default: py -3, else python; 3.10 or newer)
exit /b 0

rem REST = all arguments after the first (the verb or "--").
:rest_args
set "REST="
shift
:rest_loop
if "%~1"=="" exit /b 0
set REST=!REST! %1
shift
goto rest_loop

:setup
call :torch_spec
call :setup_key
if errorlevel 1 exit /b 1
if exist "%VPY%" if exist "%STAMP%" (
    set /p OLD=<"%STAMP%"
    if "!OLD!"=="!KEY!" (
        if defined VERBOSE echo [danlu] setup is up to date ^(torch: !TORCH_SPEC!^)
        exit /b 0
    )
)
if exist "%VPY%" goto venv_ready
call :find_python
if errorlevel 1 exit /b 1
echo [danlu] creating .venv with %PY%
%PY% -m venv .venv
if errorlevel 1 exit /b 1
:venv_ready
if exist "%STAMP%" del "%STAMP%"
echo [danlu] installing torch ^(!TORCH_SPEC!^)
"%VPY%" -m pip install -q !TORCH_SPEC!
if errorlevel 1 exit /b 1
echo [danlu] installing requirements.txt
"%VPY%" -m pip install -q -r requirements.txt
if errorlevel 1 exit /b 1
>"%STAMP%" echo !KEY!
echo [danlu] setup done
exit /b 0

rem TORCH_SPEC = pip arguments for torch, from DANLU_TORCH or the GPU check.
:torch_spec
set "CHOICE=%DANLU_TORCH%"
if defined CHOICE goto torch_spec_of_choice
set "CHOICE=cpu"
for /f "tokens=1" %%g in ('nvidia-smi -L 2^>nul') do if "%%g"=="GPU" set "CHOICE=cuda"
:torch_spec_of_choice
set "TORCH_SPEC=!CHOICE!"
if /i "!CHOICE!"=="cpu" set "TORCH_SPEC=torch==%TORCH_VERSION%"
if /i "!CHOICE!"=="cuda" set "TORCH_SPEC=torch==%TORCH_VERSION% --index-url %CUDA_INDEX%"
exit /b 0

rem KEY = what a setup depends on (requirements.txt's hash and the torch spec); a change redoes setup.
:setup_key
set "REQ_HASH="
for /f "skip=1 delims=" %%h in ('certutil -hashfile requirements.txt SHA256') do (
    if not defined REQ_HASH set "REQ_HASH=%%h"
)
if not defined REQ_HASH (
    echo [danlu] error: could not hash requirements.txt 1>&2
    exit /b 1
)
rem Older certutil puts spaces between the hex bytes.
set "REQ_HASH=%REQ_HASH: =%"
set "KEY=%REQ_HASH%;!TORCH_SPEC!"
exit /b 0

rem PY = a Python 3.10+ to create .venv with.
:find_python
set "PY=%DANLU_PYTHON%"
if defined PY goto check_python
set "PY=python"
py -3 -c "" >nul 2>&1
if not errorlevel 1 set "PY=py -3"
:check_python
%PY% -c "import sys; sys.exit(sys.version_info < (3, 10))" >nul 2>&1
if errorlevel 1 (
    echo [danlu] error: no Python 3.10 or newer found ^(tried %PY%^): install it from python.org or set DANLU_PYTHON 1>&2
    exit /b 1
)
exit /b 0
